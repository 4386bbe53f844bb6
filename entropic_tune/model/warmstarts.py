"""The built-in model's warm-start: supervised training, the on-disk cache, the committed weights.

:func:`warmstart_model` gives the base model of a run of the built-in model: the committed folder
whose recipe matches the config, else the cached one, trained (:func:`train_warmstart`) and saved on
first use. The warm-start is deterministic on one machine with one torch and transformers version,
but CPU kernels differ between machines (vector width, reduction order): two machines trained two
different base models, and every result differed from step 1 on (issue 13: first-step entropy
0.0849 here, 0.0909 there). So the base models of the shipped configurations are committed under
``entropic_tune/data/warmstarts/<name>/``: a Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files) with ``recipe.json`` (everything that determines the
weights, the versions they were built with, the command) and ``SHA256SUMS``; any other config is
trained and cached under a hash of everything that determines it, written atomically under a file
lock, so a sweep trains it once even when trials start together.

A recipe matches a config when every recorded model/task field has the config's value and every
field the recipe does not record (added to the config later) is at its default, so a new option
left at its default keeps using the committed weights.

Rebuilt only on request (:mod:`entropic_tune.commands.warmstarts`)::

    python -m entropic_tune.commands.warmstarts --list
    python -m entropic_tune.commands.warmstarts --name arithmetic-default            # default config
    python -m entropic_tune.commands.warmstarts --name paths --set task.name=paths   # any config keys
    python -m entropic_tune.commands.warmstarts --check    # rebuild each one here and compare checksums
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..config import Config, ModelConfig, TaskConfig
from ..errors import UserError
from ..metrics import aggregate
from ..tasks import Task, build_task
from .policy import Policy, build_char_tokenizer, build_tiny_model

WARMSTART_SEED = 1234
WARMSTART_BATCH = 64
CACHE_VERSION = 1  # bump when the warm-start recipe changes
STORE = Path(__file__).resolve().parents[1] / "data" / "warmstarts"
RECIPE, SUMS = "recipe.json", "SHA256SUMS"
RUN_ONLY_KEYS = ("logits_chunk", "gradient_checkpointing", "lora_r", "lora_alpha", "lora_dropout",
                 "lora_target_modules")
"""Model fields of the RL run only (how the update computes and what it trains), not of the warm-start."""
UNRECORDED = ("path", "device", "dtype", "cache_dir", "trust_remote_code", *RUN_ONLY_KEYS)
"""Model fields that do not change the warm-started weights (as in :func:`warmstart_key`)."""


ADDED_TASK_FIELDS = ("layout", "prompt_column", "answer_column", "solution_column", "chat_template",
                     "system_prompt")
"""Task fields added after warm-starts were cached: left at their defaults they stay out of
:func:`warmstart_key`, so the cache keys of existing configs do not change."""


def task_record(task_cfg: TaskConfig) -> dict[str, Any]:
    """:func:`task_fields` as the cache key holds them: the fields added after warm-starts were
    cached only when they are not at their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(TaskConfig)}
    return {k: v for k, v in task_fields(task_cfg).items() if k not in ADDED_TASK_FIELDS or v != defaults[k]}


def recipe(cfg: ModelConfig, task_cfg: TaskConfig, alphabet: str) -> dict[str, Any]:
    """Everything that determines the warm-started weights, without software versions."""
    model = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in UNRECORDED}
    return {
        "version": CACHE_VERSION,
        "seed": WARMSTART_SEED,
        "batch": WARMSTART_BATCH,
        "alphabet": alphabet,
        "model": model,
        "task": task_fields(task_cfg),
    }


def task_fields(task_cfg: TaskConfig) -> dict[str, Any]:
    """The task config without ``split``: which held-out set a run scores does not change the
    training stream, so tuning (validation) and comparison (test) start from the same weights."""
    return {k: v for k, v in dataclasses.asdict(task_cfg).items() if k != "split"}


def _section_matches(recorded: dict[str, Any], current: dict[str, Any], cls: type) -> bool:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    if set(recorded) - set(current):  # the recipe knows a field this version does not
        return False
    return all(recorded[k] == v if k in recorded else v == defaults[k] for k, v in current.items())


def matches(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when the committed ``stored`` recipe builds the weights ``wanted`` asks for."""
    if any(stored.get(k) != wanted[k] for k in ("version", "seed", "batch", "alphabet")):
        return False
    return _section_matches(
        stored.get("model", {}), wanted["model"], ModelConfig
    ) and _section_matches(stored.get("task", {}), wanted["task"], TaskConfig)


def entries(store: Path = STORE) -> list[tuple[Path, dict[str, Any]]]:
    """Every committed warm-start folder with its recipe, by name."""
    found = []
    for path in sorted(store.glob(f"*/{RECIPE}")):
        found.append((path.parent, json.loads(path.read_text())["recipe"]))
    return found


def find_committed(
    cfg: ModelConfig, task_cfg: TaskConfig, alphabet: str, store: Path = STORE
) -> Path | None:
    """The committed folder whose recipe matches, checksums verified; None when there is none."""
    wanted = recipe(cfg, task_cfg, alphabet)
    for folder, stored in entries(store):
        if matches(stored, wanted):
            verify(folder)
            return folder
    return None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path) -> None:
    """Raise a UserError when a file listed in ``SHA256SUMS`` is missing or differs."""
    for line in (folder / SUMS).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file() or sha256(path) != digest:
            raise UserError(
                f"{path}: missing or its sha256 differs from {folder / SUMS} (damaged or edited); "
                f"restore it with git, or rebuild it: python -m entropic_tune.commands.warmstarts "
                f"--name {folder.name} (with the recipe's --set keys)"
            )


def build(config: Config, folder: Path, overrides: list[str], from_cache: bool = False) -> str:
    """Train the warm-start of ``config`` (from ``overrides``) and write it to ``folder`` (replaced
    atomically); returns the sha256 of ``model.safetensors``.

    ``from_cache``: copy this machine's cached warm-start of the same recipe and versions (the
    cache key includes both) instead of training it again, when there is one.
    """
    transformers.utils.logging.disable_progress_bar()
    task = build_task(config.task)
    cached = (
        cache_root(config.model) / f"warmstart-{warmstart_key(config.model, config.task, task)}"
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        adopted = from_cache and (cached / "model.safetensors").is_file()
        if adopted:
            for path in cached.iterdir():
                shutil.copyfile(path, tmp / path.name)
        else:
            model, tokenizer = train_warmstart(config.model, task)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / SUMS).write_text("".join(f"{sha256(tmp / name)}  {name}\n" for name in files))
        command = " ".join(
            [
                "python -m entropic_tune.commands.warmstarts",
                f"--name {folder.name}",
                *(f"--set {o}" for o in overrides),
            ]
        )
        info = {
            "recipe": recipe(config.model, config.task, task.alphabet()),
            "command": command,
            "overrides": list(overrides),
            "source": f"copied from this machine's cache {cached}" if adopted else "trained",
            "built_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": sys.version.split()[0],
            },
        }
        (tmp / RECIPE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sha256(folder / "model.safetensors")


# --- training and the on-disk cache -----------------------------------------------------------------------------------


def cache_root(cfg: ModelConfig) -> Path:
    return cfg.cache_root


def warmstart_key(cfg: ModelConfig, task_cfg: TaskConfig, task: Task) -> str:
    """Hash of everything that determines the warm-started weights."""
    model_part = {k: v for k, v in asdict(cfg).items() if k not in ("path", "device", "dtype", "cache_dir",
                                                                     "trust_remote_code", "compile", *RUN_ONLY_KEYS)}
    payload = {
        "version": CACHE_VERSION, "model": model_part, "task": task_record(task_cfg),
        "alphabet": task.alphabet(), "seed": WARMSTART_SEED, "batch": WARMSTART_BATCH,
        "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def warmstart_model(cfg: ModelConfig, task_cfg: TaskConfig, task: Task) -> Path:
    """Path of the warm-started model for (cfg, task): the committed one when its recipe matches
    (``entropic_tune.model.warmstarts``), else the cached one, trained and saved on first use.

    Safe under concurrency: an exclusive file lock serialises builders, and the folder appears by an
    atomic rename only once complete, so a reader never sees a partial model.
    """
    committed = find_committed(cfg, task_cfg, task.alphabet())
    if committed is not None:  # the shipped base weights, the same on every machine
        return committed
    root = cache_root(cfg)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"model.cache_dir: cannot create '{root}': {exc.strerror}") from None
    final = root / f"warmstart-{warmstart_key(cfg, task_cfg, task)}"
    if (final / "config.json").is_file():
        return final
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "config.json").is_file():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
        try:
            announce(f"training the built-in model's warm-start for this task: {cfg.warmstart_steps} "
                     f"supervised steps on its worked solutions ({rough_duration(cfg)} on a CPU; "
                     f"once: cached in {final}, reused by every later run of this model and task)")
            model, tokenizer = train_warmstart(cfg, task, progress=_eta_reporter(cfg.warmstart_steps))
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


WARMSTART_SECONDS_PER_STEP = 0.45
"""Seconds per warm-start step of the default built-in model (hidden 64, 2 layers) on a 2-core CPU:
600 steps took ~4.5 min for a new task (issue 29); the announcement scales it by width^2 x depth."""
ETA_AFTER_STEPS = 20


def announce(message: str) -> None:
    """One line on stderr (shown by ``train`` and in a sweep's trial output)."""
    print(f"entropic-tune: {message}", file=sys.stderr, flush=True)


def rough_duration(cfg: ModelConfig) -> str:
    """``about 4.5 min``: the warm-start's expected time, from :data:`WARMSTART_SECONDS_PER_STEP`."""
    scale = (cfg.hidden_size / 64) ** 2 * cfg.num_layers / 2
    return f"about {_minutes(cfg.warmstart_steps * WARMSTART_SECONDS_PER_STEP * max(scale, 0.1))}"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _eta_reporter(total: int) -> Callable[[int, float], None]:
    """A progress hook that announces, once after :data:`ETA_AFTER_STEPS` steps, the time left as
    measured on this machine."""

    def report(step: int, elapsed: float) -> None:
        if step == ETA_AFTER_STEPS and total > step:
            announce(f"warm-start: {step}/{total} steps in {elapsed:.0f} s, "
                     f"about {_minutes(elapsed / step * (total - step))} to go")

    return report


def train_warmstart(
    cfg: ModelConfig, task: Task, progress: Callable[[int, float], None] | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Supervised training of a fresh tiny model on worked solutions (cross-entropy on response tokens).

    A share ``cfg.warmstart_corrupt_prob`` of examples carry one wrong step, so the model learns the
    format and most steps but stays uncertain at the few tokens that decide correctness.
    ``progress(step, seconds)`` is called after each step (it does not touch the random streams).
    """
    torch.manual_seed(WARMSTART_SEED)
    rng = random.Random(WARMSTART_SEED)
    tokenizer = build_char_tokenizer(task.alphabet())
    model = build_tiny_model(cfg, len(tokenizer))
    policy = Policy(model=model, tokenizer=tokenizer, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.warmstart_lr, weight_decay=0.0)
    total = max(cfg.warmstart_steps, 1)
    # OneCycleLR's warm-up phase ends at step pct_start * total - 1 and divides by that length, which
    # is 0 at exactly 10 steps with 10 %: move the boundary there (every other count is unchanged)
    pct_start = 0.1 if total != 10 else 0.15
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.warmstart_lr, total_steps=total, pct_start=pct_start
    )
    model.train()
    start = time.perf_counter()
    for step in range(1, cfg.warmstart_steps + 1):
        pairs = [task.warmstart_example(rng, rng.random() < cfg.warmstart_corrupt_prob)
                 for _ in range(WARMSTART_BATCH)]
        ids, labels_mask = _sft_batch(policy, pairs)  # (N, L), (N, L)
        logits = model(input_ids=ids, attention_mask=(ids != policy.pad_id).long()).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (N, L-1, V)
        nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (N, L-1)
        loss = aggregate(nll, labels_mask[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if progress is not None:
            progress(step, time.perf_counter() - start)
    model.eval()
    return model, tokenizer


def _sft_batch(policy: Policy, pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + response + EOS`` ids and the mask of response tokens (EOS included)."""
    rows, masks = [], []
    for prompt, response in pairs:
        p_ids = policy.encode_prompt(prompt)
        r_ids = list(policy.tokenizer(response, add_special_tokens=False)["input_ids"]) + [policy.eos_id]
        rows.append(p_ids + r_ids)
        masks.append([0] * len(p_ids) + [1] * len(r_ids))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), policy.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
    return ids, mask
