#!/usr/bin/env bash
# SalUn (RL with a saliency mask) over $SEEDS with $OPTIM.  LR (forget lr), RETAIN_LR, MASK_RATIO (with_<r>.pt,
# default 0.5). The mask depends on the forget set, which depends on the seed: one is generated per seed
# into $SAVE_DIR/mask/seed<k> when missing (generate_mask.py). Other variables: see common.sh.
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$(default_forget_lr "$OPTIM" 0.018 2e-4)}"
RATIO="${MASK_RATIO:-0.5}"
if [[ -n "${LAUNCHER:-}" ]]; then  # every seed's mask as one batch of jobs, before the runs that use them
  now_begin
  for seed in $SEEDS; do
    queue_job "$SAVE_DIR/mask/seed$seed" run.json python "$IC/generate_mask.py" "${COMMON_FLAGS[@]}" --seed "$seed" \
      --model_path "$MODEL" --save_dir "$SAVE_DIR/mask/seed$seed" --unlearn_epochs 1
  done
  now_end
fi
for seed in $SEEDS; do
  mask_dir="$SAVE_DIR/mask/seed$seed"
  if [[ -z "${LAUNCHER:-}" && ! -f "$mask_dir/with_$RATIO.pt" ]]; then
    mkdir -p "$mask_dir"
    python "$IC/generate_mask.py" "${COMMON_FLAGS[@]}" --seed "$seed" --model_path "$MODEL" --save_dir "$mask_dir" \
      --unlearn_epochs 1 > "$mask_dir/log.txt" 2>&1 || { echo "error: mask generation failed, see $mask_dir/log.txt" >&2; exit 1; }
  fi
  SEEDS="$seed" run "salun_${OPTIM}_lr${LR}" main_random.py --unlearn RL --unlearn_epochs "$EPOCHS" \
    --unlearn_lr "$LR" --retain_lr "$RETAIN_LR" --optim "$OPTIM" --model_path "$MODEL" --mask_path "$mask_dir/with_$RATIO.pt"
done
flush_jobs
