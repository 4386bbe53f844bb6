"""Engines: what turns a config into training steps (docs/ARCHITECTURE.md).

    native/     the built-in engine: trainer, rollout, evaluation, local workers

Importing the package imports nothing.
"""
