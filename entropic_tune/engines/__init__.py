"""Engines: what turns a config into training steps (docs/ARCHITECTURE.md).

    native/     the built-in engine: trainer, rollout, evaluation, local workers
    trl/        TRL's GRPOTrainer with the same losses and controllers (train.engine: trl, METHOD.md 8)

Importing the package imports nothing.
"""
