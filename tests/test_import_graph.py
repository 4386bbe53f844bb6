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
