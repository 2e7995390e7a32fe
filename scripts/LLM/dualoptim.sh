#!/usr/bin/env bash
# DualOptim on TOFU: alternating forget/retain steps (retain_freq 5) with separate Adam states
# (--optim_cfg dual_adam), for ME+GD and IDK+AP over seeds and splits; then a summary table.
#
#   MODEL_PATH=locuslab/tofu_ft_phi-1.5 DATA_PATH=data/tofu bash scripts/LLM/dualoptim.sh
#   OPTIM_CFG=adam bash scripts/LLM/dualoptim.sh        # the same schedule with one shared AdamW state
#
# Extra environment (see common.sh for the rest): FORGET_LOSSES ("ME+GD IDK+AP"), OPTIM_CFG (dual_adam),
# LR (1e-5), FORGET_LR (1e-5), RETAIN_FREQ (5), FORGET_COEFF (1.0: the original's scripts/tofu/dualoptim.sh
# runs ME+GD and IDK+AP with forget_coeff 1.0; its config comment's 0.1 is not what it ran).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
read -r -a LOSSES <<< "${FORGET_LOSSES:-ME+GD IDK+AP}"
OPTIM_CFG="${OPTIM_CFG:-dual_adam}"
LR="${LR:-1e-5}"
FORGET_LR="${FORGET_LR:-1e-5}"
RETAIN_FREQ="${RETAIN_FREQ:-5}"
FORGET_COEFF="${FORGET_COEFF:-1.0}"

for split in "${SPLIT_LIST[@]}"; do
    for forget_loss in "${LOSSES[@]}"; do
        for seed in "${SEED_LIST[@]}"; do
            out="$SAVE_DIR/optim_$OPTIM_CFG/$split/$forget_loss/lr_${FORGET_LR}_${LR}_freq_1_${RETAIN_FREQ}/seed$seed"
            unlearn_and_eval "$out" "$split" --forget_loss "$forget_loss" --alternate --optim_cfg "$OPTIM_CFG" \
                --retain_freq "$RETAIN_FREQ" --lr "$LR" --forget_lr "$FORGET_LR" --forget_coeff "$FORGET_COEFF" \
                --regularization_coeff 1.0 --mask --seed "$seed"
        done
    done
done
flush_jobs
python "$REPO_ROOT/LLM/parse_result.py" --root "$SAVE_DIR/optim_$OPTIM_CFG" \
    --save_csv "$SAVE_DIR/optim_$OPTIM_CFG/summary.csv"
