"""The TRL engine (``train.engine: trl``, METHOD.md 8): TRL's ``GRPOTrainer`` running the project's
losses and entropy controllers. ``settings`` (torch-free): packages and TRL's arguments; ``control``:
the controller/actuator/loss side of a step; ``trainer``: the ``GRPOTrainer`` subclass; ``engine``: the
step-by-step driver with the native trainer's surface."""
