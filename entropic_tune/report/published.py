"""Published reference numbers (METHOD.md section 3.3), shown in reports clearly labelled as not ours.

Average accuracy (%) over math benchmarks: EntroPIC paper over Math/AMC/AIME24/AIME25/OlympiadBench/
Omni-math; Cui et al. over 7 math benchmarks with 8 optimizer steps per rollout.
"""

from __future__ import annotations

import pandas as pd

_YANG = "Yang et al. 2025 (EntroPIC), arXiv 2511.15248"
_CUI = "Cui et al. 2025, arXiv 2505.22617"
_Q3 = "Qwen3-8B-Base, on-policy, T=0.6"
_Q3_T1 = "Qwen3-8B-Base, on-policy, T=1.0"
_Q25 = "Qwen2.5-7B, 8 optimizer steps per rollout"

PUBLISHED = pd.DataFrame(
    [
        (_YANG, _Q3, "initial model", 45.5),
        (_YANG, _Q3, "GRPO", 55.2),
        (_YANG, _Q3, "NSR", 54.8),
        (_YANG, _Q3, "AEC (adaptive entropy)", 56.9),
        (_YANG, _Q3, "EntroPIC", 58.7),
        (_YANG, _Q3_T1, "GRPO", 53.6),
        (_YANG, _Q3_T1, "EntroPIC", 57.8),
        (_CUI, _Q25, "GRPO", 38.6),
        (_CUI, _Q25, "clip-higher", 38.8),
        (_CUI, _Q25, "Clip-Cov", 40.4),
        (_CUI, _Q25, "KL-Cov", 40.6),
    ],
    columns=["source (published)", "setting", "method", "published average accuracy (%)"],
)
"""Published numbers, not from any experiment of this project."""
