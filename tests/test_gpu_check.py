"""benchmarks/gpu_check.py runs end to end on the CPU with --tiny (the GPU figures need a CUDA machine)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_tiny_writes_the_cases_it_runs(tmp_path):
    """Two of its four cases (each is a process of its own, ~10 s here): both settings of the chunked
    log-prob/entropy head and of LoRA appear once; the script's default runs all four."""
    pytest.importorskip("peft")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out),
                           "--cases", "chunked", "unchunked_lora"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["new_tokens"] == 16 and data["machine"]["cpu_model"]
    cases = {c["case"]: c for c in data["cases"]}
    assert set(cases) == {"chunked", "unchunked_lora"}
    for c in cases.values():
        assert c["model"] == "tiny" and "error" not in c
        assert c["rollout_tokens_per_s"] > 0 and c["update_tokens_per_s"] > 0 and c["step_s"] > 0
        assert c["peak_memory_gib"] > 0 and c["response_length_mean"] > 1
    # LoRA trains a small share of the weights
    assert 0 < cases["unchunked_lora"]["trainable_parameters"] < cases["chunked"]["trainable_parameters"] / 10
