#!/usr/bin/env bash
# SFR-on over seeds.  LR (forget), RETAIN_LR, SFRON_ALPHA, SFRON_ITERS.
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$([[ "$OPTIM" == sgd ]] && echo 0.02 || echo 2e-4)}"
RETAIN_LR="${RETAIN_LR:-$(default_retain_lr "$OPTIM")}"
run "sfron_${OPTIM}_lr${LR}" main_random_sfron.py --unlearn SFRon --sfron_alpha "${SFRON_ALPHA:-25}" \
  --sfron_iters "${SFRON_ITERS:-$([[ -n "${DATA:-}" ]] && echo 1500 || echo 60)}" --unlearn_lr "$LR" \
  --retain_lr "$RETAIN_LR" --optim "$OPTIM" --model_path "$MODEL"
