"""``entropic-tune autotune``: identify the entropy plant of the user's own setup and recommend gains.

Runs the engine (through the run loop, without large evaluations) with ``controller.autotune: probe`` for ``probe_steps + 1`` rollout steps (the probe's
square wave of alpha, then the step whose entropy shows the probe's last effect), identifies the plant
exactly as the autotuned controller does (:func:`entropic_tune.controllers.identify_plant`), and prints
the plant with its standard errors, the SIMC gains and the alpha bounds. Writes them as a YAML snippet
usable with ``--config`` and the probe's per-step history next to it (``<out>.history.csv``).
Exit status 0 when the gain was identified, 1 when the probe could not identify it (nothing written
but the history), 2 for bad input (before any compute).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from tqdm import tqdm

from ..config import Config
from ..controllers import EntropyPlant, identify_plant
from ..controllers.gains import effective_delay
from ..errors import UserError
from ..folder_lock import check_writable


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """The YAML snippet and the probe history paths; refuses existing files or an unwritable folder."""
    yaml_path = Path(out).expanduser().resolve()
    if yaml_path.suffix not in (".yaml", ".yml"):
        raise UserError(f"--out: '{out}' must name a .yaml file (the snippet to pass to --config)")
    history_path = yaml_path.with_suffix(".history.csv")
    for path in (yaml_path, history_path):
        if path.exists():
            raise UserError(f"--out: '{path}' already exists; choose another --out")
    check_writable(yaml_path.parent)  # probed, so an unwritable place fails before the model loads
    return yaml_path, history_path


def run_autotune(config: Config, out: str | Path, quiet: bool = False) -> int:
    """Probe ``config``'s setup, print the identified plant and gains, write the snippet to ``out``."""
    yaml_path, history_path = output_paths(out)
    # torch and transformers: imported here, so `autotune` checks its input before it loads them
    from .. import metrics as M
    from ..engines.base import build_engine
    from ..engines.loop import RunLoop
    from ..engines.records import NonFiniteError
    from ..results.writers import atomic_write_text, history_columns, history_rows, write_csv
    from .train import progress_line

    engine = build_engine(config)  # validates model, task and data before anything is written
    cfg = config.controller
    total = config.train.total_steps
    if not quiet:
        print(f"entropic-tune autotune: method={config.method} probe={cfg.probe_steps} steps "
              f"(alpha +/-{cfg.probe_amplitude:g}, holds of {cfg.probe_hold}) seed={config.train.seed}",
              file=sys.stderr)
    loop = RunLoop(engine, large_evaluations=False)  # the probe: steps only
    history = loop.history
    bar = tqdm(total=total, disable=quiet, unit="step", dynamic_ncols=True)
    try:
        for row in loop.iter_steps():
            bar.update(1)
            if not quiet and (engine.step_count % config.train.log_every == 0 or engine.step_count == total):
                tqdm.write(progress_line(row, total), file=sys.stderr)
    except NonFiniteError as exc:
        raise UserError(f"autotune: the probe stopped: {exc}") from None
    finally:
        bar.close()
        history_path.parent.mkdir(parents=True, exist_ok=True)
        rows = history_rows("autotune", config.method, config.train.seed, history)
        write_csv(history_path, rows, history_columns())
    alphas = [row[M.ALPHA] for row in history]
    plant = identify_plant(alphas, [row[M.ENTROPY] for row in history], lag=cfg.plant_lag)
    ctrl = engine.controller
    print(describe_plant(plant))
    if ctrl.plant is None:
        print(f"entropic-tune: the probe did not identify the gain (not negative by 1 standard error); "
              f"probe longer (--steps) or harder (--set controller.probe_amplitude=...). History: "
              f"{history_path}", file=sys.stderr)
        return 1
    gains = {"kp": ctrl.pi.kp, "ki": ctrl.pi.ki, "alpha_min": ctrl.pi.alpha_min, "alpha_max": ctrl.pi.alpha_max}
    print(f"recommended (SIMC on the cautious gain {plant.cautious().gain:+.3e}, tau_c "
          f"{cfg.closed_loop_steps:g} steps, effective delay {effective_delay(plant):.1f} steps): "
          + ", ".join(f"{k} {v:.4g}" for k, v in gains.items()))
    atomic_write_text(yaml_path, snippet(config, plant, gains))
    print(f"written: {yaml_path} (use with --config), probe history: {history_path}")
    return 0


def describe_plant(plant: EntropyPlant) -> str:
    """Human lines: gain, drift, holding alpha with standard errors; lag and noise."""
    hold = plant.holding_alpha if plant.gain != 0 else math.nan
    hold_se = plant.holding_alpha_stderr if plant.gain != 0 else math.nan
    return (f"plant: gain {plant.gain:+.3e} +/- {plant.gain_stderr:.1e} nats/step per unit alpha, "
            f"drift {plant.drift:+.3e} +/- {plant.drift_stderr:.1e} nats/step, holding alpha "
            f"{hold:+.2f} +/- {hold_se:.2f}\n"
            f"       lag {plant.lag:.1f} steps, measurement noise {plant.noise:.2e} nats, process noise "
            f"{plant.process_noise:.1e} nats/step, {plant.steps} steps")


def snippet(config: Config, plant: EntropyPlant, gains: dict[str, float]) -> str:
    """YAML for ``--config``: the method and the recommended controller keys, the plant as comments."""
    cfg = config.controller
    lines = [
        f"# entropic-tune autotune: method {config.method}, seed {config.train.seed}, probe of "
        f"{cfg.probe_steps} steps (alpha +/-{cfg.probe_amplitude:g}, holds of {cfg.probe_hold})",
        *(f"# {line.strip()}" for line in describe_plant(plant).splitlines()),
        f"# SIMC gains on the cautious gain |gain| + stderr for closed_loop_steps {cfg.closed_loop_steps:g}; "
        "bounds around the holding alpha",
        f"method: {config.method}",
        "controller:",
        "  autotune: 'off'",
        f"  target_entropy: {cfg.target_entropy!r}",
        *(f"  {key}: {float(value)!r}" for key, value in gains.items()),
    ]
    return "\n".join(lines) + "\n"
