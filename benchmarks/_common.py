"""Shared helpers of the benchmark scripts: machine facts, robust timing, RSS, step-phase timers, results.

Benchmarks measure; they never fail a test run. Every script prints its figures and writes
``benchmarks/results/<name>.json`` holding the exact command, the machine and the load average, because
the machines they run on are shared and noisy: compare ratios measured in the same run, not absolute
times from different runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


# --- machine and results ------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """What a reader needs to judge a number: cores, CPU, library versions, threads, load."""
    import torch
    import transformers

    info: dict[str, object] = {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1_5_15": list(os.getloadavg()),
    }
    return info


def command() -> str:
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def save(name: str, payload: dict[str, object]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the command and the machine; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {"command": command(), "machine": machine(), "unix_time": time.time(), **payload}
    path.write_text(json.dumps(record, indent=2, sort_keys=False) + "\n")
    print(f"\nwrote {path.relative_to(RESULTS.parent.parent)}")
    return path


def set_threads(threads: int) -> None:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)


# --- statistics -------------------------------------------------------------------------------------


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and the inter-quartile range of a list of timings (seconds)."""
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "q1": q[0],
        "q3": q[2],
        "n": len(ordered),
    }


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Ratios of medians and of minima (the min is the least disturbed by other processes)."""
    return {
        "of_medians": statistics.median(numerator) / statistics.median(denominator),
        "of_minima": min(numerator) / min(denominator),
    }


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# --- memory -----------------------------------------------------------------------------------------


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """Current resident set size (MiB)."""
    kb = _status_kb("VmRSS")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux ``clear_refs`` 5); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """RSS high-water mark (MiB) since the last :func:`reset_peak_rss`, else since the process start."""
    kb = _status_kb("VmHWM")
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


# --- step-phase timers ------------------------------------------------------------------------------

PHASES = (
    "sampling",
    "scoring",
    "behaviour_forward",
    "policy_forward",
    "loss",
    "backward",
    "optimizer",
)
PHASE_HELP = {
    "sampling": "rollout.generate: KV-cache sampling of B*G responses",
    "scoring": "decode_responses + task reward",
    "behaviour_forward": "no-grad log-prob/entropy forward in the rollout (skipped on-policy after issue 6)",
    "policy_forward": "log-prob/entropy forward with grad (the update's)",
    "loss": "compute_policy_loss (incl. its one metrics sync)",
    "backward": "loss.backward()",
    "optimizer": "clip_grad_norm_ + AdamW step",
    "other": "step time not in a phase above (data, advantages, metrics, syncs)",
}


def load_package(folder: str, name: str = "entropic_tune_old") -> str:
    """Import the ``entropic_tune`` package found in ``folder`` under another name; returns the name.

    The package uses relative imports only, so an older checkout and the current one can run side by
    side in one process (and so see the same machine load, step by step).
    """
    init = Path(folder).expanduser().resolve() / "entropic_tune" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--against: no entropic_tune package in {folder}")
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return name


def cpu_with_children() -> float:
    """CPU seconds of this process (all threads) and of its finished children: with
    ``TORCHINDUCTOR_COMPILE_THREADS=1`` inductor runs the C++ compiler as direct children, so a compile's
    whole CPU cost is counted (its wall time on a shared machine is inflated by the other processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def clock() -> tuple[float, float]:
    """``(wall, cpu)`` seconds. ``cpu`` is this thread's CPU time: with one torch thread all the work runs
    on the calling thread, so it is what the step would take on an idle machine, however busy this one
    is (wall time also counts the time other processes held the core)."""
    return time.perf_counter(), time.thread_time()


def native_module(package: str, name: str) -> object:
    """``<package>.engines.native.<name>`` (the layout since issue 26), or ``<package>.<name>`` of an
    older tree (``--against``)."""
    try:
        return importlib.import_module(f"{package}.engines.native.{name}")
    except ModuleNotFoundError:
        return importlib.import_module(f"{package}.{name}")


class PhaseTimer:
    """Wraps the functions a ``Trainer.step`` calls and adds up the wall and CPU time of each phase.

    It patches module attributes only (``<package>.rollout.generate`` and friends), so it times the
    real step of whichever package built the trainer, before or after a change.
    """

    def __init__(self, trainer: object, package: str = "entropic_tune") -> None:
        import torch

        rollout = native_module(package, "rollout")
        trainer_mod = native_module(package, "trainer")

        self.totals: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []
        self._patch(rollout, "generate", "sampling")
        self._patch(rollout, "decode_responses", "scoring")
        self._patch(rollout, "score", "scoring")
        self._patch(rollout, "sequence_logprobs", None)
        self._patch(trainer_mod, "sequence_logprobs", None)
        self._patch(trainer_mod, "compute_policy_loss", "loss")
        self._patch(torch.Tensor, "backward", "backward")
        self._patch(torch.nn.utils, "clip_grad_norm_", "optimizer")
        self._patch(trainer.optimizer, "step", "optimizer")

    def _patch(self, owner: object, name: str, phase: str | None) -> None:
        import torch

        original = getattr(owner, name)
        totals = self.totals

        def timed(*args: object, **kwargs: object) -> object:
            key = phase or ("policy_forward" if torch.is_grad_enabled() else "behaviour_forward")
            wall, cpu = clock()
            try:
                return original(*args, **kwargs)
            finally:
                wall_end, cpu_end = clock()
                totals[key] += wall_end - wall
                totals[key + "_cpu"] += cpu_end - cpu

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def take(self) -> dict[str, float]:
        out = {p + sfx: self.totals.get(p + sfx, 0.0) for p in PHASES for sfx in ("", "_cpu")}
        self.totals.clear()
        return out

    def close(self) -> None:
        for undo in reversed(self._undo):
            undo()


@contextmanager
def phase_timer(trainer: object, package: str = "entropic_tune") -> Iterator[PhaseTimer]:
    timer = PhaseTimer(trainer, package)
    try:
        yield timer
    finally:
        timer.close()


STEP_KEYS_KEPT = (
    "perf/step_s",
    "perf/rollout_tokens_per_s",
    "perf/update_tokens_per_s",
    "rollout/response_length_mean",
    "rollout/reward_mean",
)


def timed_step(trainer: object, package: str = "entropic_tune") -> dict[str, float]:
    """One trainer step: wall and CPU time of the step and of each phase (``<phase>`` and
    ``<phase>_cpu``), and a few of the step's own metrics."""
    with phase_timer(trainer, package) as timer:
        wall, cpu = clock()
        out = trainer.step()
        wall_end, cpu_end = clock()
        row = timer.take()
    row["step"], row["step_cpu"] = wall_end - wall, cpu_end - cpu
    for sfx in ("", "_cpu"):
        row["other" + sfx] = max(row["step" + sfx] - sum(row[p + sfx] for p in PHASES), 0.0)
    row.update({key: out[key] for key in STEP_KEYS_KEPT})
    return row


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def timed_steps(trainer: object, steps: int, warmup: int) -> dict[str, object]:
    """Run ``warmup`` then ``steps`` trainer steps; per-step wall time, phases, tokens/s and peak RSS."""
    import torch

    for _ in range(warmup):
        trainer.step()
    rss_before = rss_mb()
    reset = reset_peak_rss()
    rows = [timed_step(trainer) for _ in range(steps)]
    return {
        "per_step": rows,
        "median": medians(rows),
        "min": {k: min(r[k] for r in rows) for k in rows[0]},
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_is_since_reset": reset,
        "torch_threads": torch.get_num_threads(),
    }
