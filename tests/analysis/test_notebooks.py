"""The analysis notebooks run top to bottom on the synthetic fixtures and are committed without outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = ROOT / "analysis"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NOTEBOOKS = ("compare_methods.ipynb", "gain_search.ipynb", "ablations.ipynb")
# (notebook, fixture folder, figures it must show)
RUNS = [
    ("compare_methods.ipynb", "compare", 4),
    ("gain_search.ipynb", "search", 4),
    ("gain_search.ipynb", "search_mo", 5),
    ("ablations.ipynb", "ablate", 3),
]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_parameterised(name: str) -> None:
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name} has outputs"
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert "EXPERIMENT_DIR" in first.source and "ENTROPIC_EXPERIMENT_DIR" in first.source
    assert "../entropic_results/" in first.source
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from entropic_tune import report" in code
    assert not any(bad in code for bad in ("import torch", "import ray", "entropic_tune.engines.native.trainer"))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "folder", "figures"), RUNS, ids=[f"{n}-{f}" for n, f, _ in RUNS])
def test_notebook_executes_on_fixture(
    name: str, folder: str, figures: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = Path(shutil.copytree(FIXTURES / folder, tmp_path / folder))
    monkeypatch.setenv("ENTROPIC_EXPERIMENT_DIR", str(experiment))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ANALYSIS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(ANALYSIS)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == figures
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "entropic" in text  # the findings printed from the fixture's numbers
