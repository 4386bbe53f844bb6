"""Committed warm-start weights: recipe matching, checksums, and that the shipped ones are used."""

from __future__ import annotations

import dataclasses
import json

import pytest

from entropic_tune.config import ModelConfig, TaskConfig, load_config
from entropic_tune.errors import UserError
from entropic_tune.model import loading, warmstarts
from entropic_tune.tasks import build_task

TINY = [
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.warmstart_steps=3",
    "task.eval_size=8",
]


def _recipe(**changes) -> dict:
    cfg = load_config({k: v for k, v in changes.items()})
    return warmstarts.recipe(cfg.model, cfg.task, build_task(cfg.task).alphabet())


def test_a_recipe_matches_equal_configs_and_new_fields_only_at_their_default():
    stored = _recipe()
    assert warmstarts.matches(stored, _recipe())
    assert not warmstarts.matches(stored, _recipe(**{"model.warmstart_steps": 601}))
    assert not warmstarts.matches(stored, _recipe(**{"task.max_digits": 4}))
    assert warmstarts.matches(stored, _recipe(**{"model.device": "cpu", "model.cache_dir": "/x"}))
    older = json.loads(json.dumps(stored))
    del older["task"]["direct_share"]  # a recipe written before the field existed
    assert warmstarts.matches(older, _recipe())
    assert not warmstarts.matches(older, _recipe(**{"task.direct_share": 0.5}))
    unknown = json.loads(json.dumps(stored))
    unknown["model"]["removed_option"] = 1  # a field this version no longer has
    assert not warmstarts.matches(unknown, _recipe())
    assert not warmstarts.matches({**stored, "seed": 1}, _recipe())


def test_a_built_warmstart_is_found_verified_and_refused_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setattr(warmstarts, "STORE", tmp_path)
    config = load_config(overrides=TINY)
    alphabet = build_task(config.task).alphabet()
    digest = warmstarts.build(config, tmp_path / "tiny", TINY)
    assert digest == warmstarts.sha256(tmp_path / "tiny" / "model.safetensors")
    info = json.loads((tmp_path / "tiny" / warmstarts.RECIPE).read_text())
    assert info["overrides"] == TINY and info["command"].endswith(
        " ".join(f"--set {o}" for o in TINY)
    )
    assert (
        warmstarts.find_committed(config.model, config.task, alphabet, tmp_path)
        == tmp_path / "tiny"
    )
    other = dataclasses.replace(config.model, warmstart_steps=4)
    assert warmstarts.find_committed(other, config.task, alphabet, tmp_path) is None
    weights = tmp_path / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model.safetensors: missing or its sha256 differs"):
        warmstarts.find_committed(config.model, config.task, alphabet, tmp_path)


def test_the_default_config_loads_the_committed_weights_without_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the default warm-start must come from the committed weights")

    monkeypatch.setattr(warmstarts, "train_warmstart", refuse)
    cfg, task_cfg = ModelConfig(), TaskConfig()
    path = warmstarts.warmstart_model(cfg, task_cfg, build_task(task_cfg))
    assert path.parent == warmstarts.STORE and (path / "model.safetensors").is_file()
    model, tokenizer = loading._load_hf(path, cfg)
    assert sum(p.numel() for p in model.parameters()) > 100_000 and tokenizer.eos_token_id == 1


def test_every_committed_warmstart_is_intact_and_rebuildable_from_its_recipe():
    found = warmstarts.entries()
    assert found, "no committed warm-start under entropic_tune/data/warmstarts"
    for folder, stored in found:
        warmstarts.verify(folder)
        info = json.loads((folder / warmstarts.RECIPE).read_text())
        config = load_config(overrides=info["overrides"])  # the recorded command builds this recipe
        assert warmstarts.matches(
            stored, warmstarts.recipe(config.model, config.task, build_task(config.task).alphabet())
        )


def test_a_rebuild_on_the_same_machine_is_bit_identical_and_can_adopt_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(warmstarts, "STORE", tmp_path / "store")
    config = load_config(overrides=TINY)
    cached = warmstarts.warmstart_model(config.model, config.task, build_task(config.task))  # trains + caches
    adopted = warmstarts.build(config, tmp_path / "store" / "a", TINY, from_cache=True)
    assert adopted == warmstarts.sha256(cached / "model.safetensors")
    trained = warmstarts.build(config, tmp_path / "store" / "b", TINY)  # trained again, here
    assert trained == adopted  # same machine, same versions: the same bytes


def test_a_ten_step_warm_start_trains(tmp_path):
    """OneCycleLR's warm-up phase is 0 steps long at 10 steps x 10 % (a ZeroDivisionError before)."""
    config = load_config({o.split("=")[0]: o.split("=")[1] for o in TINY} | {"model.warmstart_steps": 10})
    task = build_task(config.task)
    model, _ = warmstarts.train_warmstart(config.model, task)
    assert all(bool(p.isfinite().all()) for p in model.parameters())
