"""Shared fixtures: a session-wide warm-start cache and a small, fast config for trainer tests."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

# Small enough that a rollout step takes a fraction of a second on one core.
FAST = {
    "model.hidden_size": 32,
    "model.num_layers": 1,
    "model.num_heads": 2,
    "model.warmstart_steps": 30,
    "rollout.prompts_per_step": 4,
    "rollout.group_size": 4,
    "rollout.max_new_tokens": 32,
    "rollout.eval_samples": 2,
    "rollout.eval_every": 2,
    "rollout.final_samples": 4,
    "task.eval_size": 8,
    "train.total_steps": 3,
    "train.threads": 1,
}


@pytest.fixture(scope="session", autouse=True)
def warmstart_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One warm-start cache per test session (each distinct model config trains once)."""
    path = os.environ.get("ENTROPIC_TUNE_TEST_CACHE") or str(tmp_path_factory.mktemp("warmstart-cache"))
    os.environ["ENTROPIC_TUNE_CACHE"] = path
    return path


@pytest.fixture()
def fast_config() -> dict:
    return dict(FAST)


@pytest.fixture(scope="session")
def ray_local(warmstart_cache: str):
    """One local Ray for the whole test session (sweeps reuse an initialised Ray and leave it running).

    Tests that need it use ``pytestmark = pytest.mark.usefixtures("ray_local")``; every other test stays
    Ray-free. Workers inherit ENTROPIC_TUNE_CACHE from this process, so trials share the warm-start cache.
    """
    import ray

    from entropic_tune.tune.sweep import start_local_ray

    started = not ray.is_initialized()
    if started:  # as a sweep starts its own: token authentication with a fresh token (inherited by drivers)
        start_local_ray(num_cpus=2, object_store_memory=100 * 1024**2)
    yield ray
    if started:
        ray.shutdown()
