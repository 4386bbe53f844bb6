#!/usr/bin/env bash
# Every experiment behind RESULTS.md, one command each (sized for a 2-core CPU machine; see RESULTS.md).
# Usage: bash scripts/reproduce_results.sh [PHASE]   PHASE: tune | default | lock | lockbig | compare | long | longalpha | ablate | all
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_AUTH_MODE=disabled RAY_AIR_NEW_OUTPUT=0
ET=".venv/bin/entropic-tune"
OUT=${OUT:-$PWD/runs}
phase=${1:-all}

if [[ $phase == tune || $phase == all ]]; then
  # 1. Fair tuning: the same budget for every method, 12 suggestions x 100 steps x seed 0 (TPE seed 0).
  #    Run as 4 and then 8 more added to the same study (how it was run: a second run re-seeds the
  #    sampler with 0 + 4, so a single --samples 12 run would draw different points after the 4th).
  for m in grpo entropy_bonus clip_higher clip_cov kl_cov adaptive_entropy entropic entropic_p; do
    $ET search --space tune_$m --samples 4 --steps 100 --seed 0 --out "$OUT" --name tune_$m --quiet
    $ET search --space tune_$m --samples 8 --steps 100 --seed 0 --out "$OUT" --name tune_$m --quiet
  done
fi
if [[ $phase == lock || $phase == all ]]; then
  # 2. Entropy lock at three targets (below, mid, near the initial ~0.085 nats), 3 seeds each.
  $ET ablate --space results_lock --out "$OUT" --name lock --quiet
fi
if [[ $phase == lockbig || $phase == all ]]; then
  # 2b. The same lock with 4x the rollout batch (64 prompts x 8 responses): is the RMSE floor noise?
  $ET ablate --space results_lock --seeds 1 --set rollout.prompts_per_step=64 --out "$OUT" --name lock_b512 --quiet
fi
if [[ $phase == default || $phase == all ]]; then
  # The README's main job, at the tuned settings.
  $ET compare --out "$OUT" --name compare_default --quiet
fi
if [[ $phase == compare || $phase == all ]]; then
  # 3 + 4. All eight methods at their tuned settings, off-policy, 5 seeds; PI vs P included.
  $ET compare --space compare_full --out "$OUT" --name compare_full --quiet
fi
if [[ $phase == long || $phase == all ]]; then
  # 5. Long run: three times the default length for GRPO, entropy bonus and EntroPIC, 3 seeds.
  $ET compare --space compare --steps 450 --seeds 3 --out "$OUT" --name long --quiet
fi
if [[ $phase == longalpha || $phase == all ]]; then
  # 5b. The same long run of the tuned EntroPIC with alpha_min -1 and -3, 3 seeds.
  $ET ablate --space long_alpha_bounds --out "$OUT" --name long_alpha_bounds --quiet
fi
if [[ $phase == ablate || $phase == all ]]; then
  # 6. Ablations (one factor at a time from the tuned EntroPIC), 3 seeds, 150 steps.
  $ET ablate --space ablations --out "$OUT" --name ablations --quiet
fi
