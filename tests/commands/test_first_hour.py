"""The first hour with your own model and data: the README's bring-your-own-data command runs as
written (parsed from README.md, so they cannot drift), the warm-start says what it does, how long and
where it is cached, and a ``rollout.max_new_tokens`` that cuts the task's solutions is warned about."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from entropic_tune.commands import main as cli
from entropic_tune.config import load_config
from entropic_tune.model.limits import check_limits, length_warning
from entropic_tune.tasks import build_task

ROOT = Path(__file__).resolve().parents[2]


def readme_commands(section: str) -> list[list[str]]:
    """The ``entropic-tune`` commands of the bash blocks in README section ``section`` (a heading),
    continuation lines joined, as argument lists."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n{section}\n")
    end = text.find("\n#", start + len(section) + 2)
    body = text[start:end if end > 0 else None]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "entropic-tune":
                commands.append(words[1:])
    return commands


@pytest.mark.slow
def test_the_readme_data_example_names_shipped_files_and_runs_as_written(tmp_path, monkeypatch, capsys):
    commands = readme_commands("### Bring your own model and data")
    data = [c for c in commands if "task.name=dataset" in c and not any(a.startswith("model.path=") for a in c)]
    assert data, "the README's bring-your-own-data example is gone"
    (command,) = data
    paths = [a.split("=", 1)[1] for a in command if a.startswith(("task.path=", "task.eval_path="))]
    assert paths and all((ROOT / p).is_file() for p in paths), paths
    monkeypatch.chdir(ROOT)  # README paths are relative to the repository root
    code = cli.main([*command, "--steps", "2", "--out", str(tmp_path), "--name", "readme", "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    summary = json.loads((tmp_path / "readme" / "summary.json").read_text())
    assert summary["status"] == "TERMINATED" and int(summary["steps"]) == 2
    # a committed warm-start is used as is (silently); any other one is trained with an announcement
    from entropic_tune.model.warmstarts import find_committed

    cfg = load_config(overrides=[a for a in command if "=" in a and not a.startswith("-")])
    committed = find_committed(cfg.model, cfg.task, build_task(cfg.task).alphabet()) is not None
    assert ("training the built-in model's warm-start" in err) is not committed, err


def test_the_readme_model_example_mentions_max_new_tokens() -> None:
    commands = readme_commands("### Bring your own model and data")
    model = [c for c in commands if any(a.startswith("model.path=") for a in c)]
    assert model and all(any(a.startswith("rollout.max_new_tokens=") for a in c) for c in model)


@pytest.mark.slow
def test_a_new_warmstart_says_what_it_does_how_long_and_where_it_is_cached(tmp_path, capsys) -> None:
    from entropic_tune.model.warmstarts import warmstart_model

    cfg = load_config({"model.hidden_size": 32, "model.num_layers": 1, "model.num_heads": 2,
                       "model.warmstart_steps": 24, "model.cache_dir": str(tmp_path), "task.max_digits": 2})
    folder = warmstart_model(cfg.model, cfg.task, build_task(cfg.task))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("entropic-tune:")]
    assert len(lines) == 2, err
    assert "training the built-in model's warm-start for this task: 24 supervised steps" in lines[0]
    assert re.search(r"\(about \d+ s on a CPU; once: cached in ", lines[0])
    assert str(folder) in lines[0] and (folder / "config.json").is_file()
    assert re.fullmatch(r"entropic-tune: warm-start: 20/24 steps in \d+ s, about \d+ s to go", lines[1])
    warmstart_model(cfg.model, cfg.task, build_task(cfg.task))  # cached: silent
    assert capsys.readouterr().err == ""


def _gsm8k_file(path: Path, steps: int) -> Path:
    rows = [{"question": f"Q{i}: add {i} and 1 {steps} times?",
             "answer": "\n".join(f"{i}+1={i + 1}" for _ in range(steps)) + f"\n#### {i + 1}"}
            for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_max_new_tokens_that_cuts_the_solutions_is_warned_about_once(tmp_path, capsys) -> None:
    pytest.importorskip("datasets")
    path = _gsm8k_file(tmp_path / "long.jsonl", steps=6)  # 42-55 characters
    base = {"task.name": "dataset", "task.path": str(path), "task.eval_size": 4}
    cfg = load_config(base)
    warning = length_warning(cfg, build_task(cfg.task))
    assert warning is not None and warning.startswith("rollout.max_new_tokens=40 cuts 20 of the task's 20")
    assert "--set rollout.max_new_tokens=64" in warning and "\n" not in warning
    check_limits(cfg)
    check_limits(cfg)
    assert capsys.readouterr().err.count("entropic-tune: warning: rollout.max_new_tokens=40 cuts") == 1
    roomy = load_config({**base, "rollout.max_new_tokens": 64})
    assert length_warning(roomy, build_task(roomy.task)) is None
    short = _gsm8k_file(tmp_path / "short.jsonl", steps=1)
    cfg = load_config({**base, "task.path": str(short)})
    assert length_warning(cfg, build_task(cfg.task)) is None


def test_no_warning_for_the_builtin_tasks_and_the_shipped_sample(capsys) -> None:
    for data in ({}, {"task.name": "paths"}, {"task.name": "dataset",
                                               "task.path": str(ROOT / "entropic_tune/data/samples/gsm8k_sample.parquet")}):
        cfg = load_config(data)
        assert length_warning(cfg, build_task(cfg.task)) is None
    assert capsys.readouterr().err == ""
