#!/usr/bin/env bash
# SCRUB over seeds.  LR (forget), RETAIN_LR, SCRUB_ALPHA, SCRUB_GAMMA.
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$([[ "$OPTIM" == sgd ]] && echo 0.01 || echo 1e-4)}"
RETAIN_LR="${RETAIN_LR:-$(default_retain_lr "$OPTIM")}"
run "scrub_${OPTIM}_lr${LR}" main_forget.py --unlearn SCRUB --unlearn_epochs "$EPOCHS" --unlearn_lr "$LR" \
  --retain_lr "$RETAIN_LR" --scrub_alpha "${SCRUB_ALPHA:-0.5}" --scrub_gamma "${SCRUB_GAMMA:-1.0}" \
  --optim "$OPTIM" --model_path "$MODEL"
