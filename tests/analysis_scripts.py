"""Shared by tests/analysis/: the scripts of analysis/ are files, not a package, so they are loaded by path."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ANALYSIS = Path(__file__).resolve().parents[1] / "analysis"


def load_script(name: str) -> ModuleType:
    """``analysis/<name>.py`` imported as a module (its ``main`` and helpers, without running it)."""
    spec = importlib.util.spec_from_file_location(name, ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
