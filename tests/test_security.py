"""Security and faults of results folders (issue 27): a folder never runs code, a copied folder never
writes into the original, a damaged checkpoint is named and skipped, local Ray is not open to the network.

The Ray tests share the session's local Ray (conftest ``ray_local``); the drivers to be killed are
subprocesses attached to it, the resumes run in this process.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from entropic_tune.commands import main as cli

STEPS = 40  # long enough to kill mid-run on a busy 2-core machine, a few seconds per trial when idle


class Payload:
    """A pickle that, when loaded, creates ``marker`` (what an attacker's ``os.system`` would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def start_driver(argv: list[str], address: str) -> subprocess.Popen:
    """A sweep driver attached to the session's Ray (it inherits the session's token)."""
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    return subprocess.Popen([sys.executable, "-m", "entropic_tune.commands.main", *argv, "--address", address, "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_mid_run(proc: subprocess.Popen, exp: Path, timeout: float = 240) -> None:
    """Until Ray's saved state lists every running trial and each has two checkpoints."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
        trials = [p for p in exp.glob("ray/*") if (p / "params.json").is_file()]
        states = list(exp.glob("ray/experiment_state*.json"))
        if (len(trials) >= 2 and states and all(len(list(t.glob("checkpoint_*"))) >= 2 for t in trials)
                and all(t.name.split("-")[-1] in states[0].read_text() for t in trials)):
            return
        time.sleep(0.1)
    raise AssertionError("the sweep did not checkpoint in time")


def killed(argv: list[str], exp: Path, address: str) -> None:
    """Run a sweep driver and SIGKILL it mid-run (as the OOM killer or a lost machine would)."""
    proc = start_driver(argv, address)
    try:
        wait_mid_run(proc, exp)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert not (exp / "summary.csv").exists(), "the driver finished before it was killed"


@pytest.fixture(scope="module")
def killed_compare(ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed-compare")
    argv = ["compare", "--space", "smoke", "--steps", str(STEPS), "--checkpoint-every", "2", "--out", str(root),
            "--name", "cut"]
    killed(argv, root / "cut", ray_local.get_runtime_context().gcs_address)
    return root / "cut"


@pytest.fixture(scope="module")
def killed_search(ray_local, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed-search")
    argv = ["search", "--space", "smoke_search", "--samples", "2", "--steps", str(STEPS), "--checkpoint-every", "2",
            "--max-concurrent", "2", "--out", str(root), "--name", "cut"]
    killed(argv, root / "cut", ray_local.get_runtime_context().gcs_address)
    return root / "cut"


def plant(exp: Path, marker: Path) -> list[str]:
    """Put the payload in every place of ``exp`` that Ray (or torch without weights_only) unpickles:
    tuner.pkl, the searcher's and the variant generator's state, the hex-pickled fields and the embedded
    cloudpickle values of every trial in experiment_state-*.json, each trial's params.pkl and error.pkl,
    and the newest checkpoint's trainer.pt. Returns what was planted."""
    blob = pickle.dumps(Payload(marker))
    planted = []
    ray = exp / "ray"
    for path in [ray / "tuner.pkl", *ray.glob("basic-variant-state-*.json"), *ray.glob("search_gen_state-*.json"),
                 *ray.glob("searcher-state-*.pkl"), *ray.glob("*/params.pkl")]:
        path.write_bytes(blob)
        planted.append(str(path.relative_to(exp)))
    for trial in ray.glob("*/params.json"):
        (trial.parent / "error.pkl").write_bytes(blob)
        newest = sorted(trial.parent.glob("checkpoint_*"))[-1]
        (newest / "trainer.pt").write_bytes(blob)
        planted += [str((trial.parent / "error.pkl").relative_to(exp)), str((newest / "trainer.pt").relative_to(exp))]
    fallback = {"_type": "CLOUDPICKLE_FALLBACK", "value": blob.hex()}
    for path in ray.glob("experiment_state*.json"):
        state = json.loads(path.read_text())
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            for key, value in list(trial.items()):
                if isinstance(value, dict) and value.get("_type") == "CLOUDPICKLE_FALLBACK":
                    trial[key] = fallback
                elif key in ("results", "extra_arg", "placement_group_factory", "_resources",
                             "_default_placement_group_factory"):
                    trial[key] = blob.hex()
            entry[0] = json.dumps(trial)
            meta = json.loads(entry[1])
            meta["checkpoint_manager"] = fallback
            entry[1] = json.dumps(meta)
        state["runner_data"]["planted"] = fallback
        path.write_text(json.dumps(state))
        planted.append(str(path.relative_to(exp)))
    return planted


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_the_payload_is_live(tmp_path):
    """The planted pickle does run when loaded the way Ray loads these files (so the tests below test
    something)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


@pytest.mark.slow
def test_resume_never_unpickles_anything_from_the_folder_and_skips_a_damaged_checkpoint(killed_compare, tmp_path,
                                                                                       capsys):
    exp = tmp_path / "planted"
    shutil.copytree(killed_compare, exp)
    marker = tmp_path / "payload-ran"
    planted = plant(exp, marker)
    assert "ray/tuner.pkl" in planted and any(p.endswith("trainer.pt") for p in planted)

    code = cli.main(["compare", "--resume", "--name", "planted", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert not marker.exists(), "a pickle from the results folder was loaded"
    assert code == 0, err
    summary = read_csv(exp / "summary.csv")
    assert sorted(r["method"] for r in summary) == ["entropic", "grpo"]
    assert all(r["status"] == "TERMINATED" and r["steps"] == str(STEPS) for r in summary)
    history = read_csv(exp / "history.csv")
    for row in summary:
        assert [int(h["step"]) for h in history if h["trial_id"] == row["trial_id"]] == list(range(1, STEPS + 1))
    damaged = [line for line in err.splitlines() if "trainer.pt is damaged" in line]
    assert len(damaged) == 2 and all("resumes from an earlier checkpoint" in line for line in damaged), err


@pytest.mark.slow
def test_a_copied_search_resumes_into_itself_with_the_original_read_only_or_gone(killed_search, tmp_path, capsys):
    original = tmp_path / "original"
    shutil.copytree(killed_search, original)
    for name in ("copy", "copy2"):
        shutil.copytree(original, tmp_path / name)
    before = snapshot(original)
    for path in [original, *original.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        code = cli.main(["search", "--resume", "--name", "copy", "--out", str(tmp_path), "--quiet"])
        out, err = capsys.readouterr()
    finally:
        for path in [original, *original.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert code == 0, err
    assert "study 'cut': 2 complete" in out and "best trial:" in out  # the copy's own study, its trials in it
    assert snapshot(original) == before  # nothing written into the original
    shutil.rmtree(original)  # and without it
    assert cli.main(["search", "--resume", "--name", "copy2", "--out", str(tmp_path), "--quiet"]) == 0, \
        capsys.readouterr().err
    for name in ("copy", "copy2"):
        exp = tmp_path / name
        summary = read_csv(exp / "summary.csv")
        assert len(summary) == 2 and all(r["status"] == "TERMINATED" and r["steps"] == str(STEPS) for r in summary)
        study = optuna.load_study(study_name="cut", storage=f"sqlite:///{exp / 'optuna.db'}")
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert sorted(t.user_attrs["trial_id"] for t in complete) == sorted(r["trial_id"] for r in summary)
        assert all(t.user_attrs.get("resume_of") for t in complete)  # each carried on a killed trial


# --- the local Ray session is not open to the network -------------------------------------------------

PROBE = """
import sys
from pathlib import Path
import ray

@ray.remote
def intrude(marker):
    Path(marker).touch()

try:
    ray.init(address=sys.argv[1], log_to_driver=False)
    ray.get(intrude.remote(sys.argv[2]), timeout=60)
    print("RAN")
except BaseException as exc:
    print("REFUSED", type(exc).__name__)
"""


@pytest.mark.slow
def test_each_local_session_gets_a_fresh_token():
    """In a fresh interpreter: it changes Ray's cached token of the process (this one may hold the
    session's Ray, which would then be cut off)."""
    code = ("import json, os\n"
            "os.environ['RAY_AUTH_MODE'] = 'disabled'\n"  # what scripts used to export
            "from entropic_tune.tune.sweep import local_token\n"
            "first, second = local_token(), local_token()\n"
            "print(json.dumps([first, second, os.environ['RAY_AUTH_MODE'], os.environ['RAY_AUTH_TOKEN']]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    first, second, mode, token = json.loads(done.stdout.strip().splitlines()[-1])
    assert mode == "token" and token == second
    assert first != second and len(first) == 64 and int(first, 16) >= 0


@pytest.mark.slow
def test_the_local_ray_refuses_a_client_without_its_token(ray_local, tmp_path):
    """The session's GCS listens on the machine's reachable address (not loopback); a client there
    without the session's token (auth disabled, or another token) cannot run a task."""
    gcs = ray_local.get_runtime_context().gcs_address
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    probes = {}  # both clients at once: each waits ~20 s for Ray's client to give up retrying
    for label, auth in (("no auth", {"RAY_AUTH_MODE": "disabled"}),
                        ("another token", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})):
        marker = tmp_path / label.replace(" ", "-")
        env = {**bare, **auth, "HOME": str(tmp_path)}  # no ~/.ray/auth_token to fall back on
        probes[label] = marker, subprocess.Popen([sys.executable, "-c", PROBE, gcs, str(marker)], env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for label, (marker, proc) in probes.items():
        stdout, stderr = proc.communicate(timeout=240)
        assert "REFUSED" in stdout and not marker.exists(), (label, stdout, stderr[-2000:])
        assert "Authentication token is missing or incorrect" in stderr, (label, stderr[-2000:])


# --- names: the same check in every command -------------------------------------------------------------

BAD_NAMES = {"parent": "../../x", "absolute": "/tmp/entropic-absolute", "blank": "", "spaces": "   ",
             "too long": "n" * 300, "control character": "a\nb"}


@pytest.mark.parametrize("command", ["train", "compare", "search", "ablate"])
@pytest.mark.parametrize("label", list(BAD_NAMES))
def test_every_command_refuses_a_name_that_is_not_one_plain_folder(tmp_path, capsys, command, label):
    out = tmp_path / "out"
    code = cli.main([command, "--name", BAD_NAMES[label], "--out", str(out)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("entropic-tune: error: --name: ")
    assert not out.exists() and not Path("/tmp/entropic-absolute").exists() and not (tmp_path.parent / "x").exists()


# --- files written atomically, with the user's umask; relative paths; a read-only folder ----------------

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def reported(tmp_path) -> Path:
    """A finished compare folder (the report fixture) with its report written once."""
    exp = Path(shutil.copytree(FIXTURES / "compare", tmp_path / "compare"))
    assert cli.main(["report", str(exp)]) == 0
    return exp


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_result_files_get_the_users_umask_not_0600(tmp_path, mask):
    from entropic_tune.results.files import atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "summary.csv", "a,b\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "summary.csv").stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # no temporary file left


def test_a_report_interrupted_mid_figure_leaves_every_figure_whole(reported, monkeypatch, capsys):
    from matplotlib.figure import Figure

    figures = {p.name: p.read_bytes() for p in (reported / "figures").glob("*.png")}
    report = (reported / "report.md").read_text()
    assert "control.png" in "".join(figures)

    def cut_short(self, target, **kwargs):  # a Ctrl-C while the PNG is being written: 124 bytes of it
        Path(target).write_bytes(figures["control.png"][:124])
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut_short)
    assert cli.main(["report", str(reported)]) == 130
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in (reported / "figures").glob("*.png")} == figures
    assert (reported / "report.md").read_text() == report
    assert not [p for p in reported.rglob(".*") if p.is_file()]  # no temporary file left behind


def test_a_report_names_its_folders_relative_to_itself(reported):
    text = (reported / "report.md").read_text()
    assert str(reported) not in text and str(reported.parent) not in text
    assert "from compare (this folder)" in text


def test_report_on_a_read_only_folder_is_one_line(reported):
    """``chmod -R a-w`` on the folder, then ``report`` as a user the permissions bind (root is not bound
    by them: the test runs the report as ``nobody`` through setpriv then)."""
    shared = Path(tempfile.mkdtemp(prefix="entropic-ro-", dir="/tmp"))  # a folder another user can reach
    try:
        exp = Path(shutil.copytree(reported, shared / "compare"))
        before = snapshot(exp)
        for path in [*exp.rglob("*"), exp]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IROTH
                       | (stat.S_IXOTH if path.is_dir() else 0))
        shared.chmod(0o755)
        cmd = [sys.executable, "-m", "entropic_tune.commands.main", "report", str(exp)]
        env = {**os.environ, "MPLCONFIGDIR": str(shared / "mpl")}
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("root, and no setpriv to run the report as another user")
            (shared / "mpl").mkdir(mode=0o777)
            (shared / "mpl").chmod(0o777)
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert f"cannot write into '{exp}'" in lines[0] and "Permission denied" in lines[0]
        assert snapshot(exp) == before
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
        shutil.rmtree(shared, ignore_errors=True)


# --- --resume refuses flags that would change the plan ---------------------------------------------------


@pytest.fixture
def planned(tmp_path) -> tuple[Path, Path]:
    """An experiment folder holding only the plan of a smoke compare (as a driver killed at once leaves it)."""
    from entropic_tune.tune import collect, spaces, sweep

    meta = sweep.plan_grid(spaces.load_space("smoke")).meta
    meta["name"] = "planned"
    collect.write_meta(tmp_path / "planned", meta)
    return tmp_path, tmp_path / "planned"


@pytest.mark.parametrize("flags, named", [
    (["--steps", "7"], "--steps 7"),
    (["--space", "compare"], "--space compare"),
    (["--set", "rollout.temperature=0.6"], "--set rollout.temperature=0.6"),
    (["--methods", "grpo"], "--methods grpo"),
    (["--seeds", "3"], "--seeds 3"),
])
def test_resume_refuses_flags_that_differ_from_the_plan(planned, capsys, flags, named):
    out, exp = planned
    before = snapshot(exp)
    code = cli.main(["compare", "--resume", "--name", "planned", "--out", str(out), *flags])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"--resume: {named} differs from the plan of 'planned'" in lines[0]
    assert snapshot(exp) == before


def test_resume_accepts_flags_that_repeat_the_plan(planned):
    import argparse

    from entropic_tune.commands import sweep as sweep_cli
    from entropic_tune.tune.collect import read_meta

    _, exp = planned
    args = argparse.Namespace(name="planned", space="smoke", steps=3, overrides=["rollout.group_size=4"],
                              methods="grpo,entropic", seeds=1, baseline=None)
    sweep_cli._same_plan(args, read_meta(exp))  # the smoke space's own values: no error


# --- silent input problems become one-line errors ----------------------------------------------------------


def test_a_space_with_a_repeated_key_is_refused_with_its_line(tmp_path, capsys):
    space = tmp_path / "dup.yaml"
    space.write_text("kind: compare\nbase:\n  controller.kp: 1\n  rollout.group_size: 4\n  controller.kp: 2\n"
                     "methods: [grpo]\n")
    code = cli.main(["compare", "--space", str(space), "--dry-run"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert f"{space} line 5" in lines[0] and "key 'controller.kp' repeated (first on line 3)" in lines[0]


def test_a_jsonl_prompt_with_two_answers_is_refused_with_both_lines(tmp_path):
    from entropic_tune.errors import UserError
    from entropic_tune.tasks.jsonl import load_problems

    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": "4"}\n'
                    '{"prompt": "1+1=", "answer": "3"}\n')
    with pytest.raises(UserError) as error:
        load_problems(data)
    assert str(error.value).startswith(f"{data}:3: the prompt of line 1 again, with another answer ('2' on line 1")


def test_a_prompt_repeated_in_the_held_out_set_counts_once(tmp_path):
    from entropic_tune.config import TaskConfig
    from entropic_tune.tasks.jsonl import JsonlTask

    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(f'{{"prompt": "{i}+1=", "answer": "{i + 1}"}}\n' for i in range(5)))
    held.write_text('{"prompt": "7+7=", "answer": "14"}\n' * 4 + '{"prompt": "8+8=", "answer": "16"}\n')
    task = JsonlTask(TaskConfig(name="jsonl", path=str(train), eval_path=str(held)))
    assert [p.prompt for p in task.eval_problems()] == ["7+7=", "8+8="]


@pytest.mark.parametrize("change, says", [
    ({"num_hidden_layers": 3}, "weight(s) missing from the model its config.json describes"),
    ({"num_hidden_layers": 1}, "weight(s) not used by the model its config.json describes"),
    ({"intermediate_size": 512}, "weight(s) of another shape in the model its config.json describes"),
])
def test_a_local_model_whose_config_does_not_match_its_weights_is_one_line(tmp_path, capsys, change, says):
    committed = Path(__file__).resolve().parents[1] / "entropic_tune" / "data" / "warmstarts" / "arithmetic-default"
    model = Path(shutil.copytree(committed, tmp_path / "model"))
    config = json.loads((model / "config.json").read_text())
    config.update(change)
    config.pop("layer_types", None)  # transformers checks it against num_hidden_layers
    (model / "config.json").write_text(json.dumps(config))
    # max_new_tokens set: the one-line warning about its default with a local model is not this test's line
    code = cli.main(["train", "--set", f"model.path={model}", "--set", "rollout.max_new_tokens=32", "--steps", "1",
                     "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, out + err
    assert lines[0].startswith(f"entropic-tune: error: model.path: '{model}': ") and says in lines[0]
    assert not (tmp_path / "out").exists()


# --- SIGTERM and a full disk end like Ctrl-C: state saved, results so far written, one line --------------


@pytest.mark.slow
def test_sigterm_mid_compare_saves_writes_and_prints_the_resume_command(ray_local, tmp_path, capsys):
    exp = tmp_path / "term"
    argv = ["compare", "--space", "smoke", "--steps", str(STEPS), "--checkpoint-every", "2", "--out", str(tmp_path),
            "--name", "term"]
    proc = start_driver(argv, ray_local.get_runtime_context().gcs_address)
    try:
        wait_mid_run(proc, exp)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    for dump in ("Traceback", "*** SIG", "Aborted", "core dumped", "Fatal Python error"):
        assert dump not in err, err[-3000:]
    assert "SIGTERM received" in err
    assert f"continue with: entropic-tune compare --resume --name term --out {tmp_path}" in err
    assert "method" in out and "done" in out  # the table of what ran
    summary = read_csv(exp / "summary.csv")
    assert sorted(r["method"] for r in summary) == ["entropic", "grpo"]
    assert any(r["status"] != "TERMINATED" for r in summary)

    assert cli.main(["compare", "--resume", "--name", "term", "--out", str(tmp_path), "--quiet"]) == 0, \
        capsys.readouterr().err
    summary = read_csv(exp / "summary.csv")
    assert all(r["status"] == "TERMINATED" and r["steps"] == str(STEPS) for r in summary)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    argv = ["compare", "--space", "smoke", "--steps", "2", "--out", str(tmp_path), "--name", "full", "--quiet"]
    monkeypatch.setenv("ENTROPIC_TUNE_FAULT", "enospc:summary.csv")  # the disk fills as the results are written
    code = cli.main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert f"{tmp_path / 'full' / 'summary.csv'}: No space left on device" in lines[0]
    assert "--resume" in lines[0] and not (tmp_path / "full" / "summary.csv").exists()
    monkeypatch.delenv("ENTROPIC_TUNE_FAULT")
    assert cli.main(["compare", "--resume", "--name", "full", "--out", str(tmp_path), "--quiet"]) == 0, \
        capsys.readouterr().err
    assert len(read_csv(tmp_path / "full" / "summary.csv")) == 2


def test_an_interrupt_before_every_trial_started_still_prints_the_resume_command(tmp_path, capsys):
    from entropic_tune.commands import sweep as sweep_cli

    meta = {"kind": "compare", "finished": False, "plan_check": "trial t1 (grpo seed 0) ran x=1 instead of 2"}
    assert sweep_cli._finish(tmp_path / "cut", meta) == 130
    err = capsys.readouterr().err
    assert "not the planned ones" in err
    assert f"continue it with: entropic-tune compare --resume --name cut --out {tmp_path}" in err


def test_rays_state_is_read_as_plain_json_without_loading_its_pickles(tmp_path):
    """The shape of Ray 2.60's experiment_state-*.json: trial_data is [trial JSON, run metadata JSON]
    pairs; the trial JSON holds hex-pickled fields and CLOUDPICKLE_FALLBACK values."""
    from entropic_tune.tune.collect import read_state

    marker = tmp_path / "ran"
    blob = pickle.dumps(Payload(marker))
    fallback = {"_type": "CLOUDPICKLE_FALLBACK", "value": blob.hex()}
    trial = {"trial_id": "abc_00000", "status": "RUNNING", "config": {"method": "grpo", "train.seed": 0},
             "relative_logdir": "grpo-s0-abc_00000", "storage": fallback, "results": blob.hex(),
             "placement_group_factory": blob.hex()}
    meta = {"last_result": {"step": 3.0, "final/pass@1": 0.5}, "error_filename": None, "checkpoint_manager": fallback}
    state = {"trial_data": [[json.dumps(trial), json.dumps(meta)]], "runner_data": {"x": fallback}, "stats": {}}
    path = tmp_path / "experiment_state-1.json"
    path.write_text(json.dumps(state))
    (got,) = read_state(path)
    assert not marker.exists()
    assert got["trial_id"] == "abc_00000" and got["status"] == "RUNNING" and got["folder"] == "grpo-s0-abc_00000"
    assert got["config"] == {"method": "grpo", "train.seed": 0} and got["last_result"]["final/pass@1"] == 0.5
