#!/usr/bin/env bash
# SFR-on and SFR-on + DualOptim on a pretrained DiT-XL/2 (the research code's DiT commands).
# Usage: bash scripts/ImageGeneration/dit_sfron.sh IMAGENET [CLASS] [CKPT]   (IMAGENET: root with train/, or class folders)
# LAUNCHER=local|slurm (common.sh): the mask is one job, then both unlearning runs are one job each.
source "$(dirname "$0")/common.sh"
DATA=$1
CLS=${2:-207}
CKPT=${3:-facebook/DiT-XL-2-256}
now_begin  # the mask runs before the unlearning runs that read it
step "dit_sfron/mask_$CLS" ImageGeneration.DiT.generate_mask --ckpt "$CKPT" --data-path "$DATA" --forget-class "$CLS" \
  --mask-path mask --n-iters 2000 --thresholds 0.5 1 3 5 10
now_end
common=(--ckpt "$CKPT" --data-path "$DATA" --batch-size 1 --snapshot-every 50 --forget-class "$CLS"
        --method ron --unlearn-loss ga --decay-forget-alpha --remain-alpha 1.0 --mask-path "mask/$CLS/fisher_1.0.pt")
step "dit_sfron/sfron_$CLS" ImageGeneration.DiT.main_forget "${common[@]}" --n-iters 600 --lr 1e-4 --forget-alpha 1e-3
step "dit_sfron/sfron_dual_$CLS" ImageGeneration.DiT.main_forget "${common[@]}" --n-iters 500 --lr 5e-5 \
  --forget-alpha 1 --dual --forget_lr 5e-5
flush_jobs
