"""Which optional packages a config needs, checked while the config is loaded.

Torch-free and TRL-free at import: :func:`check_packages` runs from the config loader, before any compute
starts, so a missing package is a one-line error naming the extra to install (``train.engine: trl``
and its options, METHOD.md 8).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .errors import UserError

EXTRAS: dict[str, str] = {"trl": "trl", "peft": "lora", "vllm": "vllm", "deepspeed": "deepspeed"}
"""Optional package -> the ``pip install 'entropic-tune[<extra>]'`` that installs it."""


def require(package: str, needed_by: str) -> None:
    """Raise a one-line :class:`UserError` when ``package`` is not installed (``needed_by``: the key)."""
    if importlib.util.find_spec(package) is None:
        raise UserError(f"{needed_by} needs the '{package}' package, which is not installed; "
                        f"install it with: pip install 'entropic-tune[{EXTRAS[package]}]'")


def check_packages(flat: dict[str, Any]) -> None:
    """Every optional package a flat config (``config.to_flat``) needs with ``train.engine: trl``."""
    if flat.get("train.engine", "native") != "trl":
        return
    require("trl", "train.engine=trl")
    if flat.get("model.lora_r", 0):
        require("peft", "model.lora_r > 0 (LoRA)")
    if flat.get("trl.use_vllm"):
        require("vllm", "trl.use_vllm")
    if flat.get("trl.deepspeed"):
        require("deepspeed", "trl.deepspeed")
