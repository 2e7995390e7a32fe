#!/usr/bin/env bash
# SFR-on and SFR-on + DualOptim on CIFAR-10 for every class (the research code's DDPM commands).
# Usage: bash scripts/ImageGeneration/ddpm_cifar10_sfron.sh CKPT_FOLDER DATA_PATH [CLASSES...]
# CKPT_FOLDER: a run folder of main_train.py or the research code's (its ckpts/ckpt.pth loads as it is).
# LAUNCHER=local|slurm (common.sh): every class's mask runs first, one job each, then the unlearning runs.
source "$(dirname "$0")/common.sh"
CKPT=$1
DATA=$2
shift 2
CLASSES=${*:-0 1 2 3 4 5 6 7 8 9}
mask() {
  step "ddpm_cifar10_sfron/mask_$1" ImageGeneration.DDPM.generate_mask --dataset cifar10 --data_path "$DATA" \
    --config cifar10_fisher.yml --ckpt_folder "$CKPT" --mode sfron --label_to_forget "$1" --threshold 1.0
}
unlearn() {
  local common=(--dataset cifar10 --data_path "$DATA" --config cifar10_sfron.yml --ckpt_folder "$CKPT"
                --label_to_forget "$1" --mode sfron --method ron --unlearn_loss adaga --decay_forget_alpha
                --remain_alpha 1.0 --mask_path "$CKPT/mask_$1/fisher_1.0.pt")
  step "ddpm_cifar10_sfron/sfron_$1" ImageGeneration.DDPM.main_forget "${common[@]}" --forget_alpha 10.0
  step "ddpm_cifar10_sfron/sfron_dual_$1" ImageGeneration.DDPM.main_forget "${common[@]}" --forget_alpha 1.0 \
    --dual --forget_lr 1e-4
}
if [[ -z "${LAUNCHER:-}" ]]; then
  for cls in $CLASSES; do mask "$cls"; unlearn "$cls"; done
else
  now_begin  # the masks run before the unlearning runs that read them
  for cls in $CLASSES; do mask "$cls"; done
  now_end
  for cls in $CLASSES; do unlearn "$cls"; done
  flush_jobs
fi
