#!/usr/bin/env bash
# SalUn (RL with a saliency mask) over seeds.  LR (forget) and RETAIN_LR; MASK_RATIO picks with_<r>.pt.
source "$(dirname "$0")/common.sh"
MODEL="$(original_model)"
LR="${LR:-$([[ "$OPTIM" == sgd ]] && echo 0.018 || echo 2e-4)}"
RETAIN_LR="${RETAIN_LR:-$(default_retain_lr "$OPTIM")}"
MASK_DIR="$SAVE_DIR/mask"
if [[ ! -f "$MASK_DIR/with_${MASK_RATIO:-0.5}.pt" ]]; then
  python "$IC/generate_mask.py" "${COMMON_FLAGS[@]}" --model_path "$MODEL" --save_dir "$MASK_DIR" --unlearn_epochs 1 \
    > "$MASK_DIR.log" 2>&1
fi
run "salun_${OPTIM}_lr${LR}" main_random.py --unlearn RL --unlearn_epochs "$EPOCHS" --unlearn_lr "$LR" \
  --retain_lr "$RETAIN_LR" --optim "$OPTIM" --model_path "$MODEL" --mask_path "$MASK_DIR/with_${MASK_RATIO:-0.5}.pt"
