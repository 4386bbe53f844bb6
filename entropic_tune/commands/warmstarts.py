"""``python -m entropic_tune.commands.warmstarts``: list, rebuild or check the committed warm-starts.

The weights, their recipes and the training are :mod:`entropic_tune.model.warmstarts`; this front-end
checks its flags and the config keys before it imports torch (``tests/commands/test_bad_input.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..config import load_config
from ..errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m entropic_tune.commands.warmstarts",
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
        config = load_config(overrides=args.overrides)  # checked before torch is imported
        from ..model.warmstarts import STORE, build  # torch and transformers
        digest = build(config, STORE / args.name, args.overrides, args.from_cache)
        print(f"{STORE / args.name}: model.safetensors sha256 {digest}")
        return 0
    except UserError as exc:
        print(f"entropic_tune.commands.warmstarts: error: {exc}", file=sys.stderr)
        return 2


def _list_or_check(check: bool) -> int:
    from ..model.warmstarts import RECIPE, build, entries, sha256, verify  # torch and transformers

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
