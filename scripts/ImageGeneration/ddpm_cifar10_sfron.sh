#!/usr/bin/env bash
# SFR-on and SFR-on + DualOptim on CIFAR-10 for every class (the research code's DDPM commands).
# Usage: bash scripts/ImageGeneration/ddpm_cifar10_sfron.sh CKPT_FOLDER DATA_PATH [CLASSES...]
# CKPT_FOLDER: a run folder of main_train.py or the research code's (its ckpts/ckpt.pth loads as it is).
set -euo pipefail
CKPT=$1
DATA=$2
shift 2
CLASSES=${*:-0 1 2 3 4 5 6 7 8 9}
for cls in $CLASSES; do
  python -m ImageGeneration.DDPM.generate_mask --dataset cifar10 --data_path "$DATA" --config cifar10_fisher.yml \
    --ckpt_folder "$CKPT" --mode sfron --label_to_forget "$cls" --threshold 1.0
  common=(--dataset cifar10 --data_path "$DATA" --config cifar10_sfron.yml --ckpt_folder "$CKPT"
          --label_to_forget "$cls" --mode sfron --method ron --unlearn_loss adaga --decay_forget_alpha
          --remain_alpha 1.0 --mask_path "$CKPT/mask_$cls/fisher_1.0.pt")
  python -m ImageGeneration.DDPM.main_forget "${common[@]}" --forget_alpha 10.0
  python -m ImageGeneration.DDPM.main_forget "${common[@]}" --forget_alpha 1.0 --dual --forget_lr 1e-4
done
