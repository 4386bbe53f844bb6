"""Data flows one way: the core never imports Ray/Optuna/pandas; the analysis never imports the core."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _loaded(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", ["entropic_tune.engines.native.trainer", "entropic_tune.commands.train", "entropic_tune.losses",
                                    "entropic_tune.commands.autotune"])
def test_core_does_not_import_ray_optuna_pandas(module):
    loaded = _loaded(module)
    assert not {"ray", "optuna", "pandas", "matplotlib"} & loaded


@pytest.mark.parametrize(
    "module",
    ["entropic_tune.controllers", "entropic_tune.actuators", "entropic_tune.methods", "entropic_tune.tasks"],
)
def test_pure_units_do_not_import_torch(module):
    assert "torch" not in _loaded(module)


def test_report_does_not_import_trainer_torch_or_ray():
    loaded = _loaded("entropic_tune.report")
    assert not {"torch", "ray", "entropic_tune.engines.native.trainer", "entropic_tune.engines.native.rollout"} & loaded


def test_cli_help_is_light():
    loaded = _loaded("entropic_tune.commands.main")
    assert not {"torch", "ray", "optuna"} & loaded


def test_notebooks_only_use_the_report_layer():
    for nb in (ROOT / "analysis").glob("*.ipynb"):
        cells = json.loads(nb.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for banned in ("entropic_tune.engines.native.trainer", "import torch", "import ray", "entropic_tune.losses"):
            assert banned not in source, f"{nb.name} uses {banned}"


def test_the_old_module_paths_of_the_tune_layer_resolve_to_the_moved_modules():
    """Folders written before the move pickle ``entropic_tune.sweep`` etc. (ray/tuner.pkl); they must
    still unpickle, to the very objects of ``entropic_tune.tune``, without importing Ray early."""
    code = (
        "import importlib, json, pickle, sys\n"
        "from entropic_tune.tune._moved import MOVED\n"
        "ray_before = 'ray' in sys.modules\n"
        "f = pickle.loads(b'centropic_tune.sweep_layout\\nray_dir\\n.')\n"
        "from entropic_tune.tune.layout import ray_dir\n"
        "same = all(importlib.import_module(o) is importlib.import_module(n) for o, n in MOVED.items())\n"
        "print(json.dumps([ray_before, f is ray_dir, same, sorted(MOVED)]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    ray_before, same_function, same_modules, old = json.loads(out.stdout.strip().splitlines()[-1])
    assert not ray_before
    assert same_function and same_modules
    assert {"entropic_tune.sweep", "entropic_tune.sweep_callbacks"} <= set(old)  # what tuner.pkl names
    for name in old:  # no old file is left behind to shadow the alias
        assert not (ROOT / (name.replace(".", "/") + ".py")).exists(), name
