#!/usr/bin/env bash
# SCRUB over $SEEDS with $OPTIM.  LR (forget lr), RETAIN_LR, SCRUB_ALPHA (0.5), SCRUB_GAMMA (1.0).
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$(default_forget_lr "$OPTIM" 0.01 1e-4)}"
run "scrub_${OPTIM}_lr${LR}" main_forget.py --unlearn SCRUB --unlearn_epochs "$EPOCHS" --unlearn_lr "$LR" \
  --retain_lr "$RETAIN_LR" --scrub_alpha "${SCRUB_ALPHA:-0.5}" --scrub_gamma "${SCRUB_GAMMA:-1.0}" \
  --optim "$OPTIM" --model_path "$MODEL"
flush_jobs
