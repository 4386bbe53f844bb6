"""Committed warm-start weights: the built-in model's base weights, the same on every machine.

The warm-start (``policy.train_warmstart``) is deterministic on one machine with one torch and
transformers version, but CPU kernels differ between machines (vector width, reduction order):
two machines trained two different base models, and every result differed from step 1 on (issue 13:
first-step entropy 0.0849 here, 0.0909 there). So the base models of the shipped configurations are
committed under ``entropic_tune/data/warmstarts/<name>/``: a Hugging Face folder (``config.json``,
``model.safetensors``, tokenizer files) with ``recipe.json`` (everything that determines the
weights, the versions they were built with, the command) and ``SHA256SUMS``.
``policy.warmstart_model`` returns a committed folder whenever its recipe matches the run's config,
after checking the checksums; any other config is trained and cached as before.

A recipe matches a config when every recorded model/task field has the config's value and every
field the recipe does not record (added to the config later) is at its default, so a new option
left at its default keeps using the committed weights.

Rebuilt only on request::

    python -m entropic_tune.warmstarts --list
    python -m entropic_tune.warmstarts --name arithmetic-default            # default config
    python -m entropic_tune.warmstarts --name paths --set task.name=paths   # any config keys
    python -m entropic_tune.warmstarts --check    # rebuild each one here and compare checksums
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import Config, ModelConfig, TaskConfig, load_config
from .errors import UserError

STORE = Path(__file__).resolve().parent / "data" / "warmstarts"
RECIPE, SUMS = "recipe.json", "SHA256SUMS"
UNRECORDED = ("path", "device", "dtype", "cache_dir", "trust_remote_code")
"""Model fields that do not change the warm-started weights (as in ``policy.warmstart_key``)."""


def recipe(cfg: ModelConfig, task_cfg: TaskConfig, alphabet: str) -> dict[str, Any]:
    """Everything that determines the warm-started weights, without software versions."""
    from .policy import CACHE_VERSION, WARMSTART_BATCH, WARMSTART_SEED

    model = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in UNRECORDED}
    return {
        "version": CACHE_VERSION,
        "seed": WARMSTART_SEED,
        "batch": WARMSTART_BATCH,
        "alphabet": alphabet,
        "model": model,
        "task": dataclasses.asdict(task_cfg),
    }


def _section_matches(recorded: dict[str, Any], current: dict[str, Any], cls: type) -> bool:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    if set(recorded) - set(current):  # the recipe knows a field this version does not
        return False
    return all(recorded[k] == v if k in recorded else v == defaults[k] for k, v in current.items())


def matches(stored: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when the committed ``stored`` recipe builds the weights ``wanted`` asks for."""
    if any(stored.get(k) != wanted[k] for k in ("version", "seed", "batch", "alphabet")):
        return False
    return _section_matches(
        stored.get("model", {}), wanted["model"], ModelConfig
    ) and _section_matches(stored.get("task", {}), wanted["task"], TaskConfig)


def entries(store: Path = STORE) -> list[tuple[Path, dict[str, Any]]]:
    """Every committed warm-start folder with its recipe, by name."""
    found = []
    for path in sorted(store.glob(f"*/{RECIPE}")):
        found.append((path.parent, json.loads(path.read_text())["recipe"]))
    return found


def find_committed(
    cfg: ModelConfig, task_cfg: TaskConfig, alphabet: str, store: Path = STORE
) -> Path | None:
    """The committed folder whose recipe matches, checksums verified; None when there is none."""
    wanted = recipe(cfg, task_cfg, alphabet)
    for folder, stored in entries(store):
        if matches(stored, wanted):
            verify(folder)
            return folder
    return None


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify(folder: Path) -> None:
    """Raise a UserError when a file listed in ``SHA256SUMS`` is missing or differs."""
    for line in (folder / SUMS).read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name.strip()
        if not path.is_file() or sha256(path) != digest:
            raise UserError(
                f"{path}: missing or its sha256 differs from {folder / SUMS} (damaged or edited); "
                f"restore it with git, or rebuild it: python -m entropic_tune.warmstarts "
                f"--name {folder.name} (with the recipe's --set keys)"
            )


def build(config: Config, folder: Path, overrides: list[str], from_cache: bool = False) -> str:
    """Train the warm-start of ``config`` (from ``overrides``) and write it to ``folder`` (replaced
    atomically); returns the sha256 of ``model.safetensors``.

    ``from_cache``: copy this machine's cached warm-start of the same recipe and versions (the
    cache key includes both) instead of training it again, when there is one.
    """
    import torch
    import transformers

    from .policy import cache_root, train_warmstart, warmstart_key
    from .tasks import build_task

    transformers.utils.logging.disable_progress_bar()
    task = build_task(config.task)
    cached = (
        cache_root(config.model) / f"warmstart-{warmstart_key(config.model, config.task, task)}"
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        adopted = from_cache and (cached / "model.safetensors").is_file()
        if adopted:
            for path in cached.iterdir():
                shutil.copyfile(path, tmp / path.name)
        else:
            model, tokenizer = train_warmstart(config.model, task)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / SUMS).write_text("".join(f"{sha256(tmp / name)}  {name}\n" for name in files))
        command = " ".join(
            [
                "python -m entropic_tune.warmstarts",
                f"--name {folder.name}",
                *(f"--set {o}" for o in overrides),
            ]
        )
        info = {
            "recipe": recipe(config.model, config.task, task.alphabet()),
            "command": command,
            "overrides": list(overrides),
            "source": f"copied from this machine's cache {cached}" if adopted else "trained",
            "built_with": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "python": sys.version.split()[0],
            },
        }
        (tmp / RECIPE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sha256(folder / "model.safetensors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m entropic_tune.warmstarts",
        description="List, rebuild or check the committed warm-start weights.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config keys of the warm-start to build (model.* and task.* matter).",
    )
    parser.add_argument(
        "--name", default=None, help="Folder name under entropic_tune/data/warmstarts/."
    )
    parser.add_argument(
        "--list", action="store_true", help="List the committed warm-starts and exit."
    )
    parser.add_argument(
        "--from-cache",
        action="store_true",
        help="Copy this machine's cached warm-start of the same recipe instead of training it.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="Rebuild every committed warm-start in a temporary folder and compare checksums.",
    )
    args = parser.parse_args(argv)
    try:
        if args.list or args.check:
            return _list_or_check(args.check)
        if not args.name:
            raise UserError("--name: give the folder name of the warm-start to (re)build")
        if Path(args.name).name != args.name or args.name in (".", ".."):
            raise UserError(f"--name: '{args.name}' must be a plain folder name (no '/', not '.' or '..')")
        config = load_config(overrides=args.overrides)  # checked before build() imports torch
        digest = build(config, STORE / args.name, args.overrides, args.from_cache)
        print(f"{STORE / args.name}: model.safetensors sha256 {digest}")
        return 0
    except UserError as exc:
        print(f"entropic_tune.warmstarts: error: {exc}", file=sys.stderr)
        return 2


def _list_or_check(check: bool) -> int:
    differ = 0
    for folder, _ in entries():
        info = json.loads((folder / RECIPE).read_text())
        print(f"{folder.name}: {info['command']}  (built with {info['built_with']})")
        if not check:
            continue
        verify(folder)
        keys = info["overrides"]
        with tempfile.TemporaryDirectory() as tmp:
            digest = build(load_config(overrides=keys), Path(tmp) / folder.name, keys)
        same = digest == sha256(folder / "model.safetensors")
        differ += not same
        print(f"  rebuilt here: {'bit-identical' if same else 'DIFFERENT weights'} ({digest[:16]})")
    return 1 if differ else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
