"""No silent wrong results (issue 18), without Ray: the folder lock between real processes, damaged
results files and Optuna stores refused by ``report``, the end-of-run check against the plan of
trials, and the size bounds that follow from the model (``results_check``, ``folder_lock``,
``tune.plan``, ``limits``). The Ray ends of the same promises (a driver killed before Ray's first
state, two drivers started together) are in test_reliability.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from entropic_tune.commands.main import main
from entropic_tune.errors import UserError
from entropic_tune.folder_lock import LOCK_FILE, FolderLock, hold
from entropic_tune.results.check import DamagedResults, check_results
from entropic_tune.tune import spaces
from entropic_tune.tune.collect import TrialRecord
from entropic_tune.tune.plan import check_plan, grid_plan, search_plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _copy(name: str, tmp: Path) -> Path:
    folder = tmp / name
    shutil.copytree(FIXTURES / name, folder)
    return folder


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("entropic-tune: error: ")
    return lines[0]


# --- the folder lock between processes ---------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from entropic_tune.folder_lock import hold

    with hold(Path(sys.argv[1])):
        Path(sys.argv[2]).touch()
        time.sleep(600)
""")


def _start_holder(tmp: Path, folder: Path) -> subprocess.Popen:
    script, ready = tmp / "holder.py", tmp / "ready"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder), str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_a_held_folder_refuses_a_second_driver_naming_the_holder_and_a_kill_frees_it(
    tmp_path, capsys
):
    folder = tmp_path / "out" / "exp"
    holder = _start_holder(tmp_path, folder)
    try:
        assert (folder / LOCK_FILE).read_text().strip() == str(holder.pid)
        before = _snapshot(tmp_path)
        with pytest.raises(
            UserError, match=rf"in use by another entropic-tune driver \(pid {holder.pid}\)"
        ):
            FolderLock(folder).acquire()
        # the CLI: a second train driver, and a report of the running experiment, in one line
        assert main(["train", "--quiet", "--out", str(tmp_path / "out"), "--name", "exp"]) == 2
        assert f"(pid {holder.pid})" in _one_error_line(capsys)
        assert main(["report", str(folder)]) == 2
        assert f"in use by a running driver (pid {holder.pid})" in _one_error_line(capsys)
        assert _snapshot(tmp_path) == before  # the refused drivers wrote nothing
    finally:
        holder.kill()
        holder.wait()
    # the killed holder's file stays, but its lock died with it
    assert (folder / LOCK_FILE).exists()
    with hold(folder):
        (folder / "results.txt").write_text("mine\n")
    # the lock file is removed when done
    assert sorted(p.name for p in folder.iterdir()) == ["results.txt"]


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    with pytest.raises(UserError, match="refused"), hold(tmp_path / "new" / "exp"):
        raise UserError("refused")
    assert list(tmp_path.iterdir()) == []


# --- damaged results files ---------------------------------------------------------------------------


def _cut_mid_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])


def _drop_last_row(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines(keepends=True)[0])


def _duplicate_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines, lines[1]]))


def _partial_middle_row(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].rsplit(",", 3)[0] + "\n"
    path.write_text("".join(lines))


def _repeat_a_step(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[1]
    path.write_text("".join(lines))


DAMAGE = [
    ("history cut mid-row", "history.csv", _cut_mid_row, "cut mid-row"),
    (
        "history cut at a row end",
        "history.csv",
        _drop_last_row,
        "has 11 row(s) (steps 1..11) but summary.csv says 12 step(s)",
    ),
    (
        "history header only",
        "history.csv",
        _header_only,
        "has no rows but summary.csv says 30 step(s)",
    ),
    ("history with a partial row", "history.csv", _partial_middle_row, "line 3 has"),
    ("history with a repeated step", "history.csv", _repeat_a_step, "repeated steps"),
    ("summary cut mid-row", "summary.csv", _cut_mid_row, "cut mid-row"),
    ("summary with a trial twice", "summary.csv", _duplicate_row, "is listed twice"),
]


@pytest.mark.parametrize("name,file,damage,expected", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_report_refuses_a_damaged_folder_naming_the_file_and_keeps_the_good_report(
    name, file, damage, expected, tmp_path, capsys
):
    folder = _copy("compare", tmp_path)
    (folder / "report.md").write_text("the good report\n")
    damage(folder / file)
    before = _snapshot(tmp_path)
    assert main(["report", str(folder)]) == 2
    line = _one_error_line(capsys)
    assert str(folder / file) in line and expected in line, line
    assert _snapshot(tmp_path) == before  # report.md not overwritten, no figure written


def test_every_fixture_and_an_unfinished_run_pass_the_check(tmp_path):
    for name in ("compare", "ablate", "search", "search_mo"):
        check_results(FIXTURES / name)
    # An interrupted run: a RUNNING trial with 2 of its steps, consistent in both files.
    folder = _copy("compare", tmp_path)
    summary = (folder / "summary.csv").read_text().splitlines(keepends=True)
    trial = summary[1].split(",")[0]
    summary[1] = summary[1].replace(",TERMINATED,,30,", ",RUNNING,,2,", 1)
    (folder / "summary.csv").write_text("".join(summary))
    history = (folder / "history.csv").read_text().splitlines(keepends=True)
    keep = [
        h for h in history[1:] if not h.startswith(f"{trial},") or h.split(",")[3] in ("1", "2")
    ]
    (folder / "history.csv").write_text("".join([history[0], *keep]))
    check_results(folder)
    # the same history with a summary that says 30 steps: damaged
    (folder / "summary.csv").write_text("".join(summary).replace(",RUNNING,,2,", ",RUNNING,,30,"))
    with pytest.raises(DamagedResults, match="has 2 row"):
        check_results(folder)


def test_a_folder_without_results_yet_is_told_from_a_damaged_one(tmp_path, capsys):
    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "experiment.yaml").write_text("kind: search\nname: cut\n")
    assert main(["report", str(folder)]) == 2
    line = _one_error_line(capsys)
    assert "unfinished: the driver stopped before writing summary.csv" in line
    assert f"entropic-tune search --resume --name cut --out {tmp_path}" in line


@pytest.mark.slow
def test_report_of_a_search_with_a_damaged_optuna_db_works_from_the_csvs(tmp_path, capsys):
    folder = _copy("search", tmp_path)
    (folder / "optuna.db").write_bytes(b"\x13garbage bytes, not SQLite" * 64)
    assert main(["report", str(folder)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert (
        len(err) == 1 and err[0].startswith("entropic-tune: warning: ") and "optuna.db" in err[0]
    ), err
    assert "file is not a database" in err[0] and "restore it from a backup" in err[0]
    text = (folder / "report.md").read_text()
    assert "search figures not drawn" in text and "Results per method" in text


# --- the end-of-run check against the plan -----------------------------------------------------------


def _smoke_grid() -> dict:
    space = spaces.load_space("smoke")
    return {"kind": "compare", "plan": grid_plan("method", spaces.grid_cells(space), space.seeds)}


def _record(trial_id: str, config: dict, steps: int, status: str = "TERMINATED") -> TrialRecord:
    return TrialRecord(trial_id, status, config, [{"step": i + 1} for i in range(steps)])


def _planned(meta: dict) -> list[TrialRecord]:
    cells = meta["plan"]["cells"]
    return [_record(f"t{i}", {**cell, "train.seed": 0}, 3) for i, cell in enumerate(cells.values())]


def test_the_planned_trials_pass_and_every_other_outcome_is_named():
    meta = _smoke_grid()
    good = _planned(meta)
    assert check_plan(meta, good, finished=True) is None
    grpo, entropic = good
    # What Ray's failed restore ran: one trial with an empty config (grpo, 200 default steps).
    assert (
        check_plan(meta, [_record("x", {}, 1)], finished=True)
        == "trial x is TERMINATED after 1 of its 200 planned steps"
    )
    assert (
        check_plan(meta, [grpo, entropic, _record("t9", dict(grpo.config), 3)], finished=True)
        == "trials t0 and t9 both ran grpo seed 0 (planned once)"
    )
    changed = _record("t1", {**entropic.config, "controller.kp": 2.5}, 3)
    assert (
        check_plan(meta, [grpo, changed], finished=True)
        == "trial t1 (entropic seed 0) ran controller.kp=2.5 instead of the planned 10.0"
    )
    assert check_plan(meta, [grpo], finished=True) == "planned trial(s) entropic seed 0 did not run"
    assert check_plan(meta, [grpo], finished=False) is None  # interrupted: the rest is still to run
    short = _record("t1", dict(entropic.config), 2)
    assert "TERMINATED after 2 of its 3 planned steps" in check_plan(
        meta, [grpo, short], finished=True
    )
    assert (
        check_plan({**meta, "options": {"scheduler": "asha"}}, [grpo, short], finished=True) is None
    )
    assert (
        check_plan(meta, [grpo, _record("t1", dict(entropic.config), 2, "ERROR")], finished=True)
        is None
    )


def test_a_search_run_is_checked_against_its_base_bounds_and_count():
    space = spaces.load_space("smoke_search")
    meta = {
        "kind": "search",
        "samples": 2,
        "repeat": 1,
        "plan": search_plan(spaces.search_base(space)),
        "params": {"controller.kp": {"type": "float", "low": 0.5, "high": 8.0, "log": True}},
    }
    base = spaces.search_base(space)
    ok = [_record(f"s{i}", {**base, "controller.kp": kp}, 3) for i, kp in enumerate((1.0, 4.0))]
    assert check_plan(meta, ok, finished=True) is None
    assert (
        check_plan(meta, ok[:1], finished=True) == "1 trials ran; the plan has 2 (samples x repeat)"
    )
    outside = _record("s1", {**base, "controller.kp": 9.0}, 3)
    assert "controller.kp=9.0, outside the searched range" in check_plan(
        meta, [ok[0], outside], finished=True
    )
    drifted = _record("s1", {**base, "controller.kp": 2.0, "loss.tau": 0.5}, 3)
    assert "loss.tau=0.5 instead of the planned" in check_plan(
        meta, [ok[0], drifted], finished=True
    )


# --- bounds from the model ---------------------------------------------------------------------------


def test_the_built_in_context_is_the_built_in_models():
    from entropic_tune.config import load_config
    from entropic_tune.model.limits import BUILTIN_POSITIONS
    from entropic_tune.model.policy import build_tiny_model

    cfg = load_config({"model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 2})
    assert build_tiny_model(cfg.model, 20).config.max_position_embeddings == BUILTIN_POSITIONS


def test_a_local_models_context_comes_from_its_config_json_with_exact_prompt_tokens(tmp_path):
    from entropic_tune.config import load_config
    from entropic_tune.model.limits import check_limits, prompt_tokens
    from entropic_tune.model.policy import (
        Policy,
        build_char_tokenizer,
        build_tiny_model,
        resolve_device,
    )
    from entropic_tune.tasks import build_task

    small = {"model.hidden_size": 16, "model.num_layers": 1, "model.num_heads": 2}
    cfg = load_config(small)
    task = build_task(cfg.task)
    tokenizer = build_char_tokenizer(task.alphabet())
    build_tiny_model(cfg.model, len(tokenizer), max_positions=48).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    local = {**small, "model.path": str(tmp_path / "m")}
    policy = Policy(None, tokenizer, resolve_device("cpu"))  # type: ignore[arg-type]
    prompt = len(policy.encode_prompt(task.longest_prompt()))
    # "999+999=" and BOS
    assert prompt_tokens(load_config(local), task.longest_prompt()) == prompt == 9
    check_limits(load_config({**local, "rollout.max_new_tokens": 48 - prompt}))
    with pytest.raises(
        UserError,
        match=rf"exceeds the 48 positions of {tmp_path / 'm' / 'config.json'}; "
        rf"allowed: <= {48 - prompt}",
    ):
        check_limits(load_config({**local, "rollout.max_new_tokens": 48 - prompt + 1}))
