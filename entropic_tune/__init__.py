"""entropic-tune: entropy control (EntroPIC and baselines) in GRPO-style RL of language models.

Rooms, lowest first (docs/ARCHITECTURE.md): what every layer shares at the top level (config,
errors, names, methods, losses, actuators, metrics), ``controllers``, ``tasks``, ``results`` (the
results contract), ``model``, ``engines``, the Ray Tune layer ``tune``, the ``report``, and the
command-line front-ends in ``commands``.
"""
