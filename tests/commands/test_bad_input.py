"""Bad input: exit code 2, one line naming the key/file/line and the allowed values, no traceback,
and nothing already written is lost. Table-driven over the `train` and `report` commands; the sweep
commands' bad inputs are in tests/tune/test_sweep_bad_input.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from entropic_tune.commands.main import main


def _hf_without_tokenizer(tmp: Path) -> str:
    folder = tmp / "no_tok"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return str(folder)


def _jsonl(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _malformed(tmp: Path) -> str:
    return _jsonl(tmp, "m.jsonl", '{"prompt": "1+1=", "answer": "2"}\n{bad json\n')


def _yaml(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


CASES = [
    ("unknown method", lambda t: ["--method", "entropix"], ["entropix", "entropic", "allowed"]),
    ("misspelt key", lambda t: ["--set", "controler.kp=1"], ["controler.kp", "did you mean 'controller.kp'"]),
    ("negative kp", lambda t: ["--set", "controller.kp=-1"], ["controller.kp", ">= 0"]),
    ("target <= 0", lambda t: ["--set", "controller.target_entropy=0"], ["controller.target_entropy", "> 0"]),
    ("tau >= 1", lambda t: ["--set", "loss.tau=1.0"], ["loss.tau", "[0, 1)"]),
    ("tau < 0", lambda t: ["--set", "loss.tau=-0.1"], ["loss.tau", "[0, 1)"]),
    ("alpha bounds", lambda t: ["--set", "controller.alpha_min=1", "--set", "controller.alpha_max=0.5"],
     ["controller.alpha_min", "alpha_max"]),
    ("group size 0", lambda t: ["--set", "rollout.group_size=0"], ["rollout.group_size", ">= 2"]),
    ("steps 0", lambda t: ["--steps", "0"], ["train.total_steps", "> 0"]),
    ("bad type", lambda t: ["--set", "train.total_steps=abc"], ["train.total_steps", "expected int"]),
    ("set without =", lambda t: ["--set", "controller.kp"], ["--set", "key=value"]),
    ("unknown verifier", lambda t: ["--set", "task.verifier=regex"], ["task.verifier", "allowed", "boxed"]),
    ("missing model path", lambda t: ["--set", f"model.path={t / 'nope'}"], ["model.path", "nope"]),
    ("model without tokenizer", lambda t: ["--set", f"model.path={_hf_without_tokenizer(t)}"],
     ["model.path", "no tokenizer"]),
    ("jsonl without path", lambda t: ["--set", "task.name=jsonl"], ["task.path", "required"]),
    ("missing jsonl", lambda t: ["--set", "task.name=jsonl", "--set", f"task.path={t / 'none.jsonl'}"],
     ["none.jsonl"]),
    ("empty jsonl", lambda t: ["--set", "task.name=jsonl", "--set", f"task.path={_jsonl(t, 'e.jsonl', '')}"],
     ["e.jsonl", "empty"]),
    ("malformed jsonl", lambda t: ["--set", "task.name=jsonl", "--set", f"task.path={_malformed(t)}"],
     ["m.jsonl:2"]),
    ("yaml syntax", lambda t: ["--config", _yaml(t, "bad.yaml", "controller:\n  kp: [1, 2\n")], ["bad.yaml", "YAML"]),
    ("yaml unknown key", lambda t: ["--config", _yaml(t, "unk.yaml", "controller:\n  kpp: 1\n")],
     ["unk.yaml", "controller.kpp", "did you mean"]),
    ("missing config file", lambda t: ["--config", str(t / "absent.yaml")], ["absent.yaml", "does not exist"]),
    ("unwritable out", lambda t: ["--out", "/proc/entropic"], ["--out", "/proc"]),
    # issue 18: a --set value at fault names the --set; sizes bounded by the model and memory
    ("kp nan names the --set", lambda t: ["--set", "controller.kp=nan"],
     ["error: --set controller.kp=nan: controller.kp: expected float"]),
    ("response longer than the context", lambda t: ["--set", "rollout.max_new_tokens=100000000"],
     ["--set rollout.max_new_tokens=100000000", "256 positions of the built-in model", "allowed: <= 247"]),
    ("prompt and response longer than the context", lambda t: ["--set", "task.max_digits=6",
                                                               "--set", "rollout.max_new_tokens=250"],
     ["rollout.max_new_tokens: 250 + the longest prompt (15 tokens)", "allowed: <= 241"]),
    ("evaluation no memory holds", lambda t: ["--set", "task.eval_size=100000", "--set", "task.max_digits=6",
                                              "--set", "rollout.eval_samples=100000"],
     ["task.eval_size, rollout.eval_samples", "a step needs at least", "this machine has"]),
    ("a model no memory holds", lambda t: ["--set", "model.hidden_size=1000000", "--set", "model.num_layers=8"],
     ["--set model.hidden_size=1000000", "weights with their gradients", "this machine has"]),
]


SLOW_CASES = {"evaluation no memory holds"}  # builds 100000 held-out problems before it refuses (> 5 s)


@pytest.mark.parametrize("name,make_args,expected",
                         [pytest.param(*c, marks=pytest.mark.slow) if c[0] in SLOW_CASES else c for c in CASES],
                         ids=[c[0] for c in CASES])
def test_train_bad_input(name, make_args, expected, tmp_path, capsys):
    args = ["train", "--quiet", "--out", str(tmp_path / "out"), *make_args(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("history.csv"))


def test_existing_results_are_not_overwritten(tmp_path, capsys):
    run = tmp_path / "out" / "run1"
    run.mkdir(parents=True)
    (run / "history.csv").write_text("precious\n")
    assert main(["train", "--quiet", "--out", str(tmp_path / "out"), "--name", "run1"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert (run / "history.csv").read_text() == "precious\n"


def test_report_of_a_folder_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0]


# issue 16: every command checks its input before it imports the heavy libraries, so a typo is
# answered at once. Each command runs in a fresh interpreter, which reports which heavy modules it
# imported and how long it took.
HEAVY = ("torch", "transformers", "ray", "optuna", "pandas", "matplotlib")
_PROBE = """
import json, sys, time
start = time.perf_counter()
if sys.argv[1] == "warmstarts":
    from entropic_tune.commands.warmstarts import main
    rc = main(sys.argv[2:])
else:
    from entropic_tune.commands.main import main
    rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - start,
                  "heavy": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _probe(args: list[str], cwd: Path) -> dict:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "error" in errors[0], done.stderr
    return result


TYPOS = [
    ["train", "--set", "controller.kpp=2"],
    ["train", "--method", "grp"],
    ["train", "--set", "rollout.max_new_tokens=100000"],
    ["train", "--set", "model.path=/nonexistent-model"],
    ["autotune", "--set", "controller.kpp=2"],
    ["autotune", "--set", "rollout.max_new_tokens=100000"],
    ["compare", "--set", "controller.kpp=2"],
    ["search", "--samples", "0"],
    ["ablate", "--set", "controller.kpp=2"],
    ["report", "."],  # a folder that holds no results
    ["warmstarts", "--name", "../outside"],
]


@pytest.mark.parametrize("args", [pytest.param(a, marks=pytest.mark.slow) if a[0] == "train" else a for a in TYPOS],
                         ids=[" ".join(a) for a in TYPOS])  # train's probes took > 5 s (measured)
def test_bad_input_is_answered_before_the_heavy_imports(args, tmp_path):
    result = _probe(args, tmp_path)
    assert result["rc"] == 2
    assert result["heavy"] == [], f"{' '.join(args)} imported {result['heavy']} before refusing"


def test_train_refuses_a_typo_about_as_fast_as_compare(tmp_path):
    """Measured, not bounded: train's bad-input latency against compare's, in the same test (before
    issue 16, train imported torch and transformers first: ~5 s against compare's ~0.1 s)."""
    train, compare = [], []
    for _ in range(3):  # interleaved, so a busy moment of the machine slows both
        train.append(_probe(["train", "--set", "controller.kpp=2"], tmp_path)["seconds"])
        compare.append(_probe(["compare", "--set", "controller.kpp=2"], tmp_path)["seconds"])
    assert min(train) < 3 * min(compare) + 0.05, (train, compare)
