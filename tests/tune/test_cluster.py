"""The cluster path: a sweep driver connects to an existing ``ray start --head`` cluster (--address).

The head runs with ``--block`` in its own process group and is stopped by signalling that process
(not ``ray stop``, which would also kill the session's Ray and any other Ray on the machine). The CLI
runs in a subprocess, so this test never touches the in-process Ray of the other tests.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, head: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no Ray head on port {port}")


@pytest.fixture()
def ray_head(warmstart_cache):
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # head and client
    cmd = [str(RAY), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2", "--temp-dir", temp,
           "--include-dashboard=false", "--dashboard-port", str(free_port()),
           "--dashboard-agent-listen-port", str(free_port())]
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for_port(port, head)
        yield port, env
    finally:
        head.send_signal(signal.SIGTERM)  # --block: shuts down every process of this head
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_compare_runs_on_an_existing_cluster(tmp_path, ray_head):
    port, env = ray_head
    cmd = [sys.executable, "-m", "entropic_tune.commands.main", "compare", "--space", "smoke",
           "--address", f"127.0.0.1:{port}", "--out", str(tmp_path), "--name", "cluster", "--quiet"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "cluster" / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["method"] for r in rows) == ["entropic", "grpo"]
    assert all(r["status"] == "TERMINATED" for r in rows)
