"""Data flows one way: rooms import only their own room or a lower one, the module-level imports have no
circle, the core never imports Ray/Optuna/pandas, and the analysis never imports the core."""

from __future__ import annotations

import ast
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --- the rooms (docs/ARCHITECTURE.md), lowest first --------------------------------------------------
PACKAGE = ROOT / "entropic_tune"
LAYERS = (
    {"errors", "names", "extras", "actuators", "methods", "config", "metrics", "distributed", "losses",
     "folder_lock"},
    {"controllers", "tasks", "results"},
    {"model"},
    {"engines"},
    {"tune", "report", "tracking"},
    {"commands"},
)
RANK = {room: rank for rank, rooms in enumerate(LAYERS) for room in rooms}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at_module_level)`` for each import of an ``entropic_tune`` module in ``path``; type-only
    imports (under ``if TYPE_CHECKING:``) are left out. ``from pkg import name`` names the submodule
    when ``name`` is one."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other, top)
                continue
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([child.module] if child.module else []))
                if base.split(".")[0] == "entropic_tune":
                    for alias in child.names:
                        sub = PACKAGE.parent / (base + "." + alias.name).replace(".", "/")
                        is_module = sub.with_suffix(".py").is_file() or (sub / "__init__.py").is_file()
                        found.append((f"{base}.{alias.name}" if is_module else base, top))
            elif isinstance(child, ast.Import):
                found.extend((a.name, top) for a in child.names if a.name.split(".")[0] == "entropic_tune")
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


GRAPH = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_room():
    rooms = {_room(m) for m in GRAPH} - {""}
    assert rooms <= set(RANK), f"rooms missing from LAYERS (and docs/ARCHITECTURE.md): {rooms - set(RANK)}"


def test_no_import_goes_from_a_lower_room_up():
    """At module level or inside a function: a room imports only from its own room or a lower one."""
    up = [f"{m} -> {t}" for m, targets in GRAPH.items() if _room(m)
          for t, _ in targets if _room(t) and RANK[_room(t)] > RANK[_room(m)]]
    assert up == []


@pytest.mark.parametrize("which", ["module level", "all, inside functions too"])
def test_the_imports_have_no_circle(which):
    """No circle among the module-level imports, nor one closed by an import inside a function."""
    edges = {m: sorted({t for t, top in targets if (top or which != "module level") and t in GRAPH and t != m})
             for m, targets in GRAPH.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for start in edges:
        if start not in state:
            walk(start, [start])
    assert circles == []


def test_the_checks_see_the_arrows_they_judge():
    """The parse finds module-level and function-level arrows (so an empty list above means something)."""
    trainer = dict(GRAPH["entropic_tune.engines.native.trainer"])
    assert trainer["entropic_tune.model.loading"] is True and trainer["entropic_tune.losses"] is True
    assert ("entropic_tune.model.policy", False) in GRAPH["entropic_tune.model.limits"]  # inside a function
    assert ("entropic_tune.model.decoding", True) in GRAPH["entropic_tune.model.compiling"]  # from . import x
    assert all(t != "entropic_tune.controllers" for t, _ in GRAPH["entropic_tune.engines.base"])  # type-only


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "analysis").glob("*.py")))
def test_analysis_scripts_load_no_engine_torch_or_ray(script):
    code = ("import importlib.util, json, sys\n"
            f"spec = importlib.util.spec_from_file_location('script', {str(ROOT / 'analysis' / script)!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "entropic_tune.report" in loaded or "entropic_tune.metrics" in loaded  # it did import the package
    assert not {"torch", "ray", "entropic_tune.engines.native.trainer"} & loaded
