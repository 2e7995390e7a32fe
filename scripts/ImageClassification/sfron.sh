#!/usr/bin/env bash
# SFR-on over $SEEDS with $OPTIM.  LR (forget lr), RETAIN_LR, SFRON_ALPHA (25), SFRON_ITERS (1500; 60 on digits).
# With OPTIM=sgd|adam the method runs one optimizer at RETAIN_LR for both objectives (research code).
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$(default_forget_lr "$OPTIM" 0.02 2e-4)}"
ITERS="${SFRON_ITERS:-$(if [[ -n "${DATA:-}" ]]; then echo 1500; else echo 60; fi)}"
run "sfron_${OPTIM}_lr${LR}" main_random_sfron.py --unlearn SFRon --sfron_alpha "${SFRON_ALPHA:-25}" \
  --sfron_iters "$ITERS" --unlearn_lr "$LR" --retain_lr "$RETAIN_LR" --optim "$OPTIM" --model_path "$MODEL"
flush_jobs
