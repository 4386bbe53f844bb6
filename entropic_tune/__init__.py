"""entropic-tune: entropy control (EntroPIC and baselines) in GRPO-style RL of language models.

Core (config, losses, controllers, rollout, trainer) at the top level, the Ray Tune layer in
``entropic_tune.tune``, the report in ``entropic_tune.report`` (docs/ARCHITECTURE.md).
"""

from .tune._moved import install as _install_moved_paths

_install_moved_paths()
