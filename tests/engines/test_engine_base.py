"""The engine seam: train.engine picks the engine; the native Trainer implements the interface."""

from __future__ import annotations

import pytest

from entropic_tune.config import ENGINES, load_config
from entropic_tune.engines.base import Engine, build_engine
from entropic_tune.engines.native.trainer import Trainer
from entropic_tune.errors import UserError


def test_an_unknown_engine_is_refused_in_one_line_naming_the_allowed_values():
    with pytest.raises(UserError) as info:
        load_config({"train.engine": "trll"})
    message = str(info.value)
    assert "\n" not in message and message.startswith("train.engine: 'trll' is not allowed")
    assert message.endswith(f"allowed: {', '.join(ENGINES)}")


def test_native_builds_the_trainer_and_it_is_an_engine(fast_config):
    config = load_config(fast_config)
    assert config.train.engine == "native"
    engine = build_engine(config)
    assert type(engine) is Trainer and isinstance(engine, Engine)
    base = engine.large_evaluation("base")
    assert base is not None and set(base.metrics) == {"base/accuracy", "base/pass@1", "base/pass@2",
                                                      "base/pass@4"}
    engine.set_learning_rate(0.5)
    assert [group["lr"] for group in engine.optimizer.param_groups] == [0.5]
