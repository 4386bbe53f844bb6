"""Search-space files: every bundled file expands into valid configs; bad files fail naming file and key.

Ray-free: loading, validation, expansion and ``--dry-run`` never start Ray.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from entropic_tune.commands import main as cli
from entropic_tune.config import load_config
from entropic_tune.errors import UserError
from entropic_tune.methods import MAIN_KNOBS, METHODS
from entropic_tune.tune import spaces

BUNDLED = spaces.available()


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_bundled_spaces_exist():
    expected = {"smoke", "compare", "compare_full", "tune_entropic", "ablations",
                *(f"tune_{m}" for m in METHODS if m != "entropic")}
    assert expected <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_space_expands_into_valid_configs(name):
    space = spaces.load_space(name)
    if space.kind == "search":
        base = spaces.search_base(space)
        for p in space.params:
            for value in p.choices or (p.low, p.high, (p.low + p.high) / 2):
                cfg = load_config(spaces.trial_config({**base, p.key: value, spaces.TRIAL_INDEX: 1}))
                assert cfg.method == space.method
                assert cfg.train.seed == space.seeds[0] + 1
        return
    trials = spaces.expand_trials(space)
    if space.kind == "compare":
        assert len(trials) == len(space.methods) * len(space.seeds)
    else:  # every (factor, level) is run, or reported with an identical run (same_as)
        labels = [f"{t['factor']}={t['variant']}" for t in trials if t["train.seed"] == space.seeds[0]]
        labels += [x for t in trials if t["train.seed"] == space.seeds[0] for x in t["same_as"].split(";") if x]
        assert sorted(labels) == sorted(f"{f}={v}" for f, levels in space.factors.items() for v in levels)
        configs = [repr(sorted(spaces.flat_trial_config(t).items())) for t in trials]
        assert len(set(configs)) == len(configs)  # no config runs twice
    for trial in trials:
        cfg = load_config(spaces.trial_config(trial))
        assert cfg.train.seed in space.seeds
        if space.kind == "ablate":
            assert {"factor", "variant"} <= set(trial)


def test_each_baseline_tunes_its_main_knobs():
    for method, knobs in MAIN_KNOBS.items():
        space = spaces.load_space(f"tune_{method}")
        assert space.method == method
        assert set(knobs) <= {p.key for p in space.params}, method


def test_compare_is_off_policy_and_compare_full_has_all_methods():
    compare = load_config(spaces.expand_trials(spaces.load_space("compare"))[0])
    assert not compare.optim.on_policy
    assert set(spaces.load_space("compare_full").methods) == set(METHODS)


def test_method_overrides_and_set_precedence(tmp_path):
    path = write(tmp_path, "kind: compare\nbase: {loss.beta: 0.002}\nmethods: [grpo, entropy_bonus]\n"
                           "method_overrides: {entropy_bonus: {loss.beta: 0.005}}\n")
    space = spaces.load_space(path, {"loss.beta": 0.001, "train.total_steps": 7})
    cells = spaces.grid_cells(space)
    assert cells["grpo"]["loss.beta"] == 0.001 and cells["entropy_bonus"]["loss.beta"] == 0.005
    assert all(c["train.total_steps"] == 7 for c in cells.values())


def test_trial_config_strips_bookkeeping_and_offsets_the_seed():
    config = {"method": "entropic", "train.seed": 3, "factor": "tau", "variant": "0", "__trial_index__": 2}
    assert spaces.trial_config(config) == {"method": "entropic", "train.seed": 5}


BAD = [
    ("kind: compare\nmethods: [grpo\nseeds: 1\n", r"space\.yaml line \d+: YAML error"),
    ("kind: compare\nmethods: [grpo]\nbase: {controller.kpp: 1.0}\n", r"space\.yaml: base: unknown key "
     r"'controller\.kpp' \(did you mean 'controller\.kp'\?\)"),
    ("kind: compare\nmethods: [grpo, entropik]\n", r"space\.yaml: methods: unknown method 'entropik' "
     r"\(did you mean 'entropic'\?\)"),
    ("kind: search\nmethod: entropic\nparams: {controller.kp: {type: float, low: 2, high: 2}}\n",
     r"params\.controller\.kp: empty range: low \(2\) must be < high \(2\)"),
    ("kind: search\nmethod: entropic\nparams: {controller.kp: {type: float, low: 0, high: 2, log: true}}\n",
     r"params\.controller\.kp: log: a log range needs low > 0"),
    ("kind: search\nmethod: entropic\nparams: {controller.kp: {type: normal, low: 0, high: 2}}\n",
     r"params\.controller\.kp: unknown param type 'normal'"),
    ("kind: search\nmethod: entropic\nparams: {controller.kpp: {type: float, low: 1, high: 2}}\n",
     r"params\.controller\.kpp: unknown config key \(did you mean 'controller\.kp'\?\)"),
    ("kind: search\nmethod: entropic\nparams: {loss.tau: {type: float, low: 0.5, high: 1.5}}\n",
     r"params\.loss\.tau=1\.5: loss\.tau: must be in \[0, 1\)"),
    ("kind: search\nmethod: entropic\nparams: {loss.tau: {type: categorical, choices: []}}\n",
     r"params\.loss\.tau: categorical needs a non-empty list"),
    ("kind: sweep\n", r"kind: expected one of compare, search, ablate"),
    ("kind: compare\nmethods: [grpo]\nmethod_overide: {}\n", r"unknown top-level key 'method_overide'"),
    ("kind: ablate\nmethod: entropic\nfactors: {anti_windup: {on: {controller.anti_windup: true}, "
     "off: {controller.anti_windup: false}}}\n", r"level name True must be a string"),
    ("kind: ablate\nmethod: entropic\nfactors: {tau: {a: {loss.tau: 0.5}, b: {loss.tau: 2.0}}}\n",
     r"factors\.tau\.b: loss\.tau: must be in \[0, 1\)"),
    ("kind: compare\nmethods: [grpo]\nseeds: 0\n", r"seeds: expected a positive count"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_space_files_fail_naming_file_and_key(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        spaces.load_space(write(tmp_path, text))


def test_unknown_space_name_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown search space 'comparee' \(did you mean 'compare'\?\)"):
        spaces.load_space("comparee")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# The smoke space's sizes, for dry runs of the other spaces: their time estimate times a step of each
# distinct trial config on this machine (tune/estimate.py), which is quick at these sizes.
SMALL = [a for key, value in (("model.hidden_size", 32), ("model.num_layers", 1), ("model.num_heads", 2),
                              ("model.warmstart_steps", 30), ("rollout.prompts_per_step", 4),
                              ("rollout.group_size", 4), ("rollout.max_new_tokens", 16),
                              ("rollout.final_samples", 4), ("task.eval_size", 8))
         for a in ("--set", f"{key}={value}")]


@pytest.mark.slow
def test_dry_run_lists_the_trials_without_ray(capsys):
    code, out, _ = run_cli(capsys, "compare", "--space", "smoke", "--dry-run", "--seeds", "2")
    assert code == 0
    assert "4 trials, 3 steps each" in out and out.count("seed 1") == 2
    code, out, _ = run_cli(capsys, "ablate", "--dry-run", "--steps", "5", *SMALL)
    assert code == 0 and "anti_windup=off" in out
    code, out, _ = run_cli(capsys, "search", "--space", "tune_entropic", "--dry-run", "--samples", "4",
                           "--repeat", "2", *SMALL)
    assert code == 0 and "4 suggestions x 2 seed(s) = 8 trials" in out and "controller.kp" in out


@pytest.mark.slow
def test_dry_run_lists_only_the_settings_each_method_uses(capsys):
    """issue 16: the compare space's entropic has its own gains and target; grpo's line shows no
    controller key (its controller's output reaches no loss), entropic's shows them; then the
    estimate says how it was made, and a second dry run reads the measured step times back."""
    code, out, _ = run_cli(capsys, "compare", "--dry-run", "--steps", "3", *SMALL)
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if " seed " in line}
    assert set(lines) == {"grpo", "entropy_bonus", "entropic"}
    assert "controller." not in lines["grpo"] and "controller." not in lines["entropy_bonus"]
    assert "loss.beta=" in lines["entropy_bonus"] and "loss.beta=" not in lines["entropic"]
    tuned = yaml.safe_load((spaces.SPACES_DIR / "compare.yaml").read_text())["method_overrides"]["entropic"]
    for key in ("controller.kp", "controller.ki", "controller.target_entropy"):
        assert f"{key}={tuned[key]:g}" in lines["entropic"]
    assert "estimated wall time: ~" in out and "  how: " in out and "timed" in out
    code, again, _ = run_cli(capsys, "compare", "--dry-run", "--steps", "3", "--seeds", "1", *SMALL)
    assert code == 0 and "3 read from" in again and "step_times.json" in again
    assert "timed now" not in again
    # workers per trial: fewer trials at once, and the estimate says what it leaves out
    code, workers, _ = run_cli(capsys, "compare", "--dry-run", "--steps", "3", "--seeds", "1",
                               "--workers-per-trial", "2", *SMALL)
    at_once = lambda text: int(text.split(" at once")[0].rsplit(" ", 1)[-1])  # noqa: E731
    assert code == 0 and "each trial on 2 workers" in workers
    assert at_once(workers) == max(1, at_once(again) // 2)


@pytest.mark.parametrize("argv", [
    ("compare", "--space", "BROKEN", "--dry-run"),
    ("compare", "--space", "smoke", "--set", "model.hiden_size=8", "--dry-run"),
    ("compare", "--space", "smoke", "--methods", "grpo,nope", "--dry-run"),
    ("compare", "--space", "tune_entropic", "--dry-run"),
    ("search", "--space", "smoke_search", "--samples", "0", "--dry-run"),
])
def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, argv):
    broken = write(tmp_path, "kind: compare\nmethods: [grpo\n", "broken.yaml")
    code, out, err = run_cli(capsys, *[broken if a == "BROKEN" else a for a in argv])
    assert code == 2
    assert err.startswith("entropic-tune: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_primary_metric_is_read_checked_and_recorded():
    """One primary metric per experiment, declared in its space file (issue 28)."""
    from entropic_tune.tune import sweep

    space = spaces.load_space("compare")
    assert space.primary == "final/pass@1"
    assert sweep._meta(space)["primary"] == "final/pass@1"
    assert "primary" not in sweep._meta(spaces.load_space("tune_grpo"))
    with pytest.raises(UserError, match=r"primary: 'final/pass@one' is not allowed.*final/pass@<k>"):
        spaces._primary("final/pass@one", "x.yaml")
    assert spaces._primary("summary/late_accuracy", "x.yaml") == "summary/late_accuracy"
