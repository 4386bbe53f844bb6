"""``entropic-tune autotune``: bad input is one line and exit 2 before any compute, nothing already
written is lost; the printed plant, the recommended gains and the YAML snippet (read back with
--config) on a simulated plant; exit 1 and no snippet when the probe cannot identify the gain."""

from __future__ import annotations

from pathlib import Path

import pytest
from simulated_plant import Plant  # tests/ is on sys.path (conftest.py): the real noise level

from entropic_tune import metrics as M
from entropic_tune.commands.main import main
from entropic_tune.config import load_config
from entropic_tune.controllers import identify_plant, pi_gains
from entropic_tune.engines.native import trainer


def _existing(tmp: Path) -> str:
    path = tmp / "kept.yaml"
    path.write_text("controller:\n  kp: 1.0\n")
    return str(path)


CASES = [
    ("method without PI", lambda t: ["--method", "grpo"], ["grpo", "entropic, entropic_p"]),
    ("unknown method", lambda t: ["--method", "entropix"], ["entropix", "allowed"]),
    ("probe shorter than a period", lambda t: ["--steps", "10"], ["controller.probe_steps", "probe_hold"]),
    ("misspelt key", lambda t: ["--set", "controller.probe_hld=3"], ["controller.probe_hld", "did you mean"]),
    ("bad filter", lambda t: ["--set", "controller.filter=median"], ["controller.filter", "kalman"]),
    ("out exists", lambda t: ["--out", _existing(t)], ["kept.yaml", "already exists"]),
    ("out not yaml", lambda t: ["--out", str(t / "gains.txt")], ["gains.txt", ".yaml"]),
    ("unwritable out", lambda t: ["--out", "/proc/entropic/gains.yaml"], ["--out", "/proc"]),
    # an existing folder that os.access calls writable for root: refused before the probe runs
    ("unwritable existing folder", lambda t: ["--out", "/proc/gains.yaml"], ["--out", "/proc", "not writable"]),
    ("missing config", lambda t: ["--config", str(t / "absent.yaml")], ["absent.yaml", "does not exist"]),
]


@pytest.mark.parametrize("name,make_args,expected", CASES, ids=[c[0] for c in CASES])
def test_autotune_bad_input(name, make_args, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = make_args(tmp_path)
    assert main(["autotune", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for part in expected:
        assert part in err
    if name == "out exists":
        assert (tmp_path / "kept.yaml").read_text() == "controller:\n  kp: 1.0\n"
    assert not (tmp_path / "autotune.yaml").exists()


class SimulatedTrainer:
    """Stands in for the native engine: the real autotuned controller drives a simulated plant (gain,
    drift); the run loop drives it as it drives the Trainer."""

    gain = -2e-3

    def __init__(self, config, dist=None):
        from entropic_tune.controllers import build_controller

        self.config = config

        self.controller = build_controller(config.controller)
        self.plant = Plant(self.gain, 1.75 * self.gain, lag=5.0, seed=0)
        self.step_count = 0

    def step(self):
        self.step_count += 1
        entropy = self.plant.measure()
        alpha = self.controller.update(entropy)
        self.plant.apply(alpha)
        row = {key: 0.0 for key in M.STEP_KEYS}
        row.update(self.controller.metrics())
        row.update({M.STEP: float(self.step_count), M.ENTROPY: entropy})
        return row


def test_autotune_prints_the_plant_and_writes_a_snippet_for_config(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "Trainer", SimulatedTrainer)  # build_engine imports it when it runs
    out = tmp_path / "gains.yaml"
    assert main(["autotune", "--out", str(out), "--quiet", "--set", "controller.closed_loop_steps=15"]) == 0
    printed = capsys.readouterr().out
    assert "plant: gain" in printed and "recommended (SIMC" in printed
    history = (tmp_path / "gains.history.csv").read_text().splitlines()
    assert len(history) == 1 + 81  # header + probe + the step that measures its last effect
    config = load_config(files=[out])
    assert config.method == "entropic" and config.controller.autotune == "off"
    rows = [line.split(",") for line in history[1:]]
    header = history[0].split(",")
    alphas = [float(r[header.index(M.ALPHA)]) for r in rows]
    entropies = [float(r[header.index(M.ENTROPY)]) for r in rows]
    plant = identify_plant(alphas, entropies)
    assert plant.is_identified()
    kp, ki = pi_gains(plant.cautious(), 15.0)
    assert (config.controller.kp, config.controller.ki) == pytest.approx((kp, ki), rel=1e-12)
    assert config.controller.alpha_min < plant.holding_alpha < config.controller.alpha_max
    assert f"{plant.gain:+.3e}" in out.read_text()  # the plant is in the snippet's comments


def test_autotune_without_a_negative_gain_exits_1_and_writes_no_snippet(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "Trainer", type("Wrong", (SimulatedTrainer,), {"gain": 1e-3}))
    out = tmp_path / "gains.yaml"
    assert main(["autotune", "--out", str(out), "--quiet"]) == 1
    assert not out.exists() and (tmp_path / "gains.history.csv").exists()
    assert "did not identify" in capsys.readouterr().err
