#!/usr/bin/env bash
# The whole DDPM class-unlearning pipeline on the embedded digits data (CPU, minutes):
# pretrain -> masks -> SalUn / SFR-on with and without DualOptim -> samples -> classifier and FID.
# Usage: bash scripts/ImageGeneration/ddpm_digits_pipeline.sh [EXP_ROOT] [CLASS]
# Env: DEVICE (default cpu); CKPT=<run folder> reuses a pretrained model instead of training one.
# It runs here only: each step reads the run folder the one before printed, so LAUNCHER is refused.
set -euo pipefail
if [[ -n "${LAUNCHER:-}" ]]; then
  echo "error: LAUNCHER: ddpm_digits_pipeline.sh runs here only (each step needs the run folder the step before" \
       "printed); unset LAUNCHER, or use ddpm_cifar10_sfron.sh / dit_sfron.sh" >&2
  exit 2
fi
EXP=${1:-exp_digits}
CLS=${2:-0}
DEV=${DEVICE:-cpu}
run() { python -m "ImageGeneration.DDPM.$1" "${@:2}" --device "$DEV"; }

CKPT=${CKPT:-$(run main_train --exp_root "$EXP" --mode pretrain | tail -n 1)}
run generate_mask --ckpt_folder "$CKPT" --mode salun --label_to_forget "$CLS" --threshold 0.5
run generate_mask --ckpt_folder "$CKPT" --mode sfron --label_to_forget "$CLS" --threshold 1.0
run train_classifier --save_dir "$EXP"

declare -A RUNS
RUNS[salun]=$(run main_forget --exp_root "$EXP" --ckpt_folder "$CKPT" --mode salun --label_to_forget "$CLS" \
  --unlearn_loss rl --remain_alpha 1e-3 --mask_path "$CKPT/mask_$CLS/with_0.5.pt" | tail -n 1)
RUNS[sfron]=$(run main_forget --exp_root "$EXP" --ckpt_folder "$CKPT" --mode sfron --label_to_forget "$CLS" \
  --method ron --unlearn_loss adaga --forget_alpha 10.0 --decay_forget_alpha --remain_alpha 1.0 \
  --mask_path "$CKPT/mask_$CLS/fisher_1.0.pt" | tail -n 1)
RUNS[sfron_dual]=$(run main_forget --exp_root "$EXP" --ckpt_folder "$CKPT" --mode sfron --label_to_forget "$CLS" \
  --method ron --unlearn_loss adaga --forget_alpha 1.0 --decay_forget_alpha --remain_alpha 1.0 \
  --mask_path "$CKPT/mask_$CLS/fisher_1.0.pt" --dual --forget_lr 1e-4 | tail -n 1)

for name in pretrain "${!RUNS[@]}"; do
  dir=${RUNS[$name]:-$CKPT}
  run sample --ckpt_folder "$dir" --mode sample_classes --classes_to_generate "$CLS" --n_samples_per_class 100 \
    --timesteps 100 > /dev/null
  run sample --ckpt_folder "$dir" --mode sample_fid --classes_to_generate "x$CLS" --n_samples_per_class 50 \
    --timesteps 100 > /dev/null
  echo "== $name ($dir)"
  run classifier_evaluation --sample_path "$dir/class_samples/$CLS" --ckpt_path "$EXP" --label_of_forgotten_class "$CLS"
  run evaluator "$dir/fid_samples_guidance_2.0_excluded_class_$CLS" --ref_dataset digits --ref_split test \
    --label_to_forget "$CLS" --features classifier --classifier_path "$EXP"
done
