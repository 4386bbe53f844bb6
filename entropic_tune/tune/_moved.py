"""Old module paths of the Ray Tune layer, from before it moved into ``entropic_tune.tune``.

An experiment folder written before the move pickles references to them (``ray/tuner.pkl`` names
``entropic_tune.sweep`` and ``entropic_tune.sweep_callbacks``; the searcher's state names
``entropic_tune.sweep``), so ``--resume`` of such a folder imports them. ``install()`` adds a finder
that answers each old name with the module that now holds its code, the same module object, so a
pickled reference resolves to the current function or class.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "entropic_tune.trainable": "entropic_tune.tune.trainable",
    "entropic_tune.trainable_workers": "entropic_tune.tune.trainable_workers",
    "entropic_tune.sweep": "entropic_tune.tune.sweep",
    "entropic_tune.sweep_callbacks": "entropic_tune.tune.callbacks",
    "entropic_tune.sweep_cli": "entropic_tune.commands.sweep",
    "entropic_tune.sweep_layout": "entropic_tune.tune.layout",
    "entropic_tune.sweep_plan": "entropic_tune.tune.plan",
    "entropic_tune.sweep_results": "entropic_tune.tune.collect",
    "entropic_tune.spaces": "entropic_tune.tune.spaces",
    "entropic_tune.progress": "entropic_tune.tune.progress",
    "entropic_tune.estimate": "entropic_tune.tune.estimate",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):  # the module is the new one, already executed
        pass


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
