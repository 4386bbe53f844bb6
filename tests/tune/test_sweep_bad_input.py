"""Bad input for the sweep commands (compare / search / ablate): exit code 2, exactly one stderr line
naming the key, file or line and the allowed values, no traceback, and nothing already written is
overwritten (or added). Table-driven like tests/commands/test_bad_input.py.

Every check runs before a trial could start: ``Tuner.fit`` is replaced by a failure for the whole
test, and so is ``ray.init`` except for the one case that needs the cluster's resources (it uses the
session's Ray).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from entropic_tune.commands.main import main

SMOKE = ["--space", "smoke"]
SEARCH = ["search", "--space", "smoke_search"]


def _file(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _search_space(tmp: Path, name: str, params: str) -> str:
    return _file(tmp, name, f"kind: search\nmethod: entropic\nbase: {{train.total_steps: 3}}\nparams:\n{params}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _junk_folder(tmp: Path) -> str:
    (tmp / "out" / "junk").mkdir(parents=True)
    (tmp / "out" / "junk" / "notes.txt").write_text("not an experiment\n")
    return "junk"


def _stillborn(tmp: Path) -> str:
    """A folder whose driver died before Ray saved anything: experiment.yaml only."""
    (tmp / "out" / "stillborn").mkdir(parents=True)
    (tmp / "out" / "stillborn" / "experiment.yaml").write_text("kind: compare\nname: stillborn\n")
    return "stillborn"


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture_copy(tmp: Path, fixture: str, name: str) -> Path:
    import shutil

    folder = tmp / "out" / name
    shutil.copytree(FIXTURES / fixture, folder)
    return folder


def _damaged_study(tmp: Path) -> str:
    """A search folder (intact CSVs) whose optuna.db is garbage bytes."""
    folder = _fixture_copy(tmp, "search", "dstudy")
    (folder / "optuna.db").write_bytes(b"\x13not an sqlite file" * 100)
    return "dstudy"


def _cut_history(tmp: Path) -> str:
    """A finished compare folder whose history.csv was cut mid-row."""
    path = _fixture_copy(tmp, "compare", "dcut") / "history.csv"
    path.write_text(path.read_text()[:-25])
    return "dcut"


# (id, argv builder, fragments of the one stderr line, needs the session's Ray)
CASES = [
    ("space yaml error", lambda t: ["compare", "--space", _file(t, "bad.yaml", "kind: compare\nmethods: [grpo\n")],
     ["bad.yaml", "line", "YAML error"], False),
    ("space unknown top-level key", lambda t: ["compare", "--space", _file(t, "top.yaml", "kind: compare\nmethod: [grpo]\n")],
     ["top.yaml", "unknown top-level key 'method'", "did you mean 'methods'", "allowed:"], False),
    ("space unknown parameter", lambda t: [*SEARCH[:1], "--space", _search_space(
        t, "unk.yaml", "  controller.kpp: {type: float, low: 1, high: 2}\n")],
     ["unk.yaml", "params.controller.kpp", "unknown config key", "did you mean 'controller.kp'"], False),
    ("space unknown base key", lambda t: ["compare", "--space", _file(
        t, "base.yaml", "kind: compare\nmethods: [grpo]\nbase: {rollout.temprature: 0.6}\n")],
     ["base.yaml", "rollout.temprature", "did you mean 'rollout.temperature'"], False),
    ("space empty range", lambda t: [*SEARCH[:1], "--space", _search_space(
        t, "empty.yaml", "  controller.kp: {type: float, low: 2, high: 2}\n")],
     ["empty.yaml", "params.controller.kp", "empty range", "low (2"], False),
    ("space bad param type", lambda t: [*SEARCH[:1], "--space", _search_space(
        t, "type.yaml", "  controller.kp: {type: normal, low: 1, high: 2}\n")],
     ["type.yaml", "params.controller.kp", "'normal'", "allowed: float, int, categorical"], False),
    ("unknown space name", lambda t: ["compare", "--space", "smokey"],
     ["--space", "'smokey'", "did you mean 'smoke'", "compare_full", "tune_entropic"], False),
    ("space of another kind", lambda t: ["compare", "--space", "smoke_search"],
     ["--space smoke_search", "search space", "entropic-tune search"], False),
    ("missing space file", lambda t: ["compare", "--space", str(t / "none.yaml")], ["--space", "none.yaml", "does not exist"],
     False),
    ("unknown method", lambda t: ["compare", *SMOKE, "--methods", "grpo,entropix"],
     ["--methods", "'entropix'", "did you mean 'entropic'", "allowed:", "clip_cov"], False),
    ("method twice", lambda t: ["compare", *SMOKE, "--methods", "grpo,grpo"], ["--methods", "listed twice"], False),
    ("bad --set key", lambda t: ["compare", *SMOKE, "--set", "controler.kp=2"],
     ["controler.kp", "did you mean 'controller.kp'"], False),
    ("bad --set value", lambda t: ["compare", *SMOKE, "--set", "loss.tau=1.5"], ["loss.tau", "[0, 1)"], False),
    ("steps 0", lambda t: ["compare", *SMOKE, "--steps", "0"], ["--steps", ">= 1"], False),
    ("seeds 0", lambda t: ["compare", *SMOKE, "--seeds", "0"], ["--seeds", ">= 1"], False),
    ("gpus here", lambda t: ["compare", *SMOKE, "--gpus-per-trial", "1"],
     ["--gpus-per-trial 1", "0 GPU(s)", "--gpus-per-trial 0"], True),
    ("negative gpus", lambda t: ["compare", *SMOKE, "--gpus-per-trial", "-1"], ["--gpus-per-trial", ">= 0"], False),
    ("keep no checkpoints", lambda t: ["compare", *SMOKE, "--keep-checkpoints", "0"], ["--keep-checkpoints", ">= 1"],
     False),
    ("unknown logger", lambda t: ["compare", *SMOKE, "--log", "neptune"],
     ["--log", "'neptune'", "tensorboard", "mlflow", "wandb"],
     False),
    ("mlflow uri without --log mlflow", lambda t: ["compare", *SMOKE, "--mlflow-uri", str(t / "store")],
     ["--mlflow-uri", "only with --log mlflow"], False),
    ("mlflow uri of an unknown scheme", lambda t: ["compare", *SMOKE, "--log", "mlflow", "--mlflow-uri", "ftp://host/x"],
     ["--mlflow-uri ftp://host/x", "unknown scheme 'ftp'", "allowed:", "http", "sqlite", "a folder"], False),
    ("mlflow server not reachable", lambda t: ["compare", *SMOKE, "--log", "mlflow", "--mlflow-uri",
                                               f"http://127.0.0.1:{_free_port()}"],
     ["--mlflow-uri http://127.0.0.1:", "no MLflow server reachable", "mlflow server"], False),
    ("resume with another logger", lambda t: ["compare", "--resume", "--name", "existing", "--log", "mlflow"],
     ["--log mlflow", "started with --log none", "drop --log"], False),
    ("checkpoint every 0", lambda t: ["compare", *SMOKE, "--checkpoint-every", "0"], ["--checkpoint-every", ">= 1"],
     False),
    ("pbt on a compare", lambda t: ["compare", *SMOKE, "--scheduler", "pbt"], ["--scheduler pbt", "only for 'search'"],
     False),
    ("unknown scheduler", lambda t: ["compare", *SMOKE, "--scheduler", "hyperband"],
     ["--scheduler", "'hyperband'", "asha", "pbt", "none"], False),
    ("resume without experiment", lambda t: ["compare", "--resume", "--name", _junk_folder(t)],
     ["--resume", "junk", "holds no experiment", "--name"], False),
    ("resume of a missing folder", lambda t: ["compare", "--resume", "--name", "never-ran"],
     ["--resume", "never-ran", "holds no experiment"], False),
    ("resume before Ray saved state", lambda t: ["compare", "--resume", "--name", _stillborn(t)],
     ["--resume", "stillborn", "no Ray Tune experiment to resume", "without --resume"], False),
    ("resume of another kind", lambda t: ["search", "--resume", "--name", "existing"],
     ["--resume", "is a compare experiment", "entropic-tune compare --resume"], False),
    ("resume without name", lambda t: ["compare", "--resume"], ["--resume", "--name"], False),
    ("unwritable out", lambda t: ["compare", *SMOKE, "--out", "/proc/entropic-x"], ["--out", "/proc", "not writable"],
     False),
    ("out is a file", lambda t: ["compare", *SMOKE, "--out", _file(t, "plain.txt", "x\n")],
     ["--out", "plain.txt", "not a folder"], False),
    ("address without cluster", lambda t: ["compare", *SMOKE, "--address", f"127.0.0.1:{_free_port()}"],
     ["--address 127.0.0.1:", "no Ray head reachable", "ray start --head"], False),
    ("address without port", lambda t: ["compare", *SMOKE, "--address", "localhost"], ["--address localhost", "HOST:PORT"],
     False),
    ("unknown sampler", lambda t: [*SEARCH, "--sampler", "annealing"],
     ["--sampler", "'annealing'", "tpe", "gp", "cmaes", "random"], False),
    ("unknown objective", lambda t: [*SEARCH, "--objective", "speed"], ["--objective", "'speed'", "tracking"], False),
    ("samples 0", lambda t: [*SEARCH, "--samples", "0"], ["--samples", ">= 1", "got 0"], False),
    ("samples not a number", lambda t: [*SEARCH, "--samples", "ten"], ["--samples", "invalid int value", "'ten'"], False),
    ("repeat 0", lambda t: [*SEARCH, "--repeat", "0"], ["--repeat", ">= 1"], False),
    ("both objectives with repeat", lambda t: [*SEARCH, "--objective", "both", "--repeat", "2"],
     ["--objective both", "--repeat"], False),
    ("existing experiment name", lambda t: ["compare", *SMOKE, "--name", "existing"],
     ["--name", "existing", "already holds a compare experiment", "--resume", "another --name"], False),
    ("search into a compare experiment", lambda t: [*SEARCH, "--name", "existing"],
     ["--name", "existing", "already holds a compare experiment"], False),
    ("name with a path", lambda t: ["compare", *SMOKE, "--name", "../escape"], ["--name", "'../escape'", "plain folder"],
     False),
    # issue 18: errors name their source; sizes bounded by the model; damaged folders refused
    ("a bad --set value names the --set", lambda t: ["compare", *SMOKE, "--set", "controller.kp=nan"],
     ["error: --set controller.kp=nan: controller.kp: expected float, got 'nan'"], False),
    ("a bad space value names the file and key", lambda t: ["compare", "--space", _file(
        t, "ov.yaml", "kind: compare\nmethods: [grpo]\nmethod_overrides: {grpo: {controller.kp: -1}}\n")],
     ["ov.yaml: methods.grpo: controller.kp: must be >= 0"], False),
    ("response longer than the model's context", lambda t: ["compare", *SMOKE, "--set",
                                                            "rollout.max_new_tokens=100000000"],
     ["error: --set rollout.max_new_tokens=100000000: rollout.max_new_tokens", "256 positions of the built-in model",
      "allowed: <= 247"], False),
    ("searched range beyond the context", lambda t: [*SEARCH[:1], "--space", _search_space(
        t, "ctx.yaml", "  rollout.max_new_tokens: {type: int, low: 8, high: 4096}\n")],
     ["ctx.yaml: params.rollout.max_new_tokens=4096", "256 positions", "allowed: <= 247"], False),
    ("a batch no memory holds", lambda t: ["compare", *SMOKE, "--set", "rollout.prompts_per_step=1000000",
                                           "--set", "rollout.group_size=100000"],
     ["--set rollout.prompts_per_step=1000000, --set rollout.group_size=100000", "a step needs at least",
      "this machine has"], False),
    ("more mini-batches than sequences", lambda t: ["compare", *SMOKE, "--set", "optim.mini_batches_per_rollout=17"],
     ["--set optim.mini_batches_per_rollout=17", "16 sequences", "allowed: <= 16"], False),
    ("continue a search whose optuna.db is damaged", lambda t: [*SEARCH, "--name", _damaged_study(t)],
     ["dstudy/optuna.db", "not a readable Optuna storage (file is not a database)", "restore it from a backup",
      "report' still works"], False),
    ("resume a search whose optuna.db is damaged", lambda t: ["search", "--resume", "--name", _damaged_study(t)],
     ["dstudy/optuna.db", "not a readable Optuna storage", "restore it from a backup"], False),
    ("resume with a history.csv cut mid-row", lambda t: ["compare", "--resume", "--name", _cut_history(t)],
     ["dcut/history.csv: damaged: cut mid-row", "move the damaged file(s) away", "--resume"], False),
]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a Tuner would run or a Ray would start."""
    import ray
    from ray.tune import Tuner

    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached Ray: validation must come first")

    monkeypatch.setattr(Tuner, "fit", refuse)
    monkeypatch.setattr(ray, "init", refuse)


@pytest.mark.parametrize("name,make_args,expected,needs_ray", CASES, ids=[c[0] for c in CASES])
def test_sweep_bad_input(name, make_args, expected, needs_ray, tmp_path, capsys, request, monkeypatch):
    if needs_ray:
        request.getfixturevalue("ray_local")
        capsys.readouterr()  # Ray's start-up log, if this test started it
    _refuse_ray(monkeypatch)
    out = tmp_path / "out"
    existing = out / "existing"  # an experiment with results that no bad input may touch
    existing.mkdir(parents=True)
    (existing / "experiment.yaml").write_text("kind: compare\nname: existing\n")
    (existing / "summary.csv").write_text("precious\n")
    (existing / "history.csv").write_text("precious\n")
    argv = make_args(tmp_path)
    if "--out" not in argv:
        argv += ["--out", str(out)]
    before = _snapshot(tmp_path)
    try:
        code = main([*argv, "--quiet"])
    except SystemExit as exc:  # argparse's own checks (choices, types)
        code = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and lines[0].startswith("entropic-tune: error: ")
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert _snapshot(tmp_path) == before  # nothing overwritten, nothing added
    assert not (tmp_path / "escape").exists()
