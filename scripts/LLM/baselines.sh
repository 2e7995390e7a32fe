#!/usr/bin/env bash
# TOFU baselines: joint forget + regulariser steps with AdamW, over losses, splits and seeds.
#
#   MODEL_PATH=locuslab/tofu_ft_phi-1.5 DATA_PATH=data/tofu SPLITS="forget01 forget05 forget10" \
#       bash scripts/LLM/baselines.sh
#
# Extra environment (see common.sh for the rest): FORGET_LOSSES
# ("GA+GD GA+KL NPO+GD NPO+KL DPO+GD DPO+KL IDK+GD IDK+AP ME+GD"), LR (1e-5), FORGET_COEFF (0.1: the
# original's scripts/tofu/baselines.sh passes forget_coeff 0.1 to its losses; DPO+GD is the one it runs).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
read -r -a LOSSES <<< "${FORGET_LOSSES:-GA+GD GA+KL NPO+GD NPO+KL DPO+GD DPO+KL IDK+GD IDK+AP ME+GD}"
LR="${LR:-1e-5}"
FORGET_COEFF="${FORGET_COEFF:-0.1}"

for split in "${SPLIT_LIST[@]}"; do
    for forget_loss in "${LOSSES[@]}"; do
        for seed in "${SEED_LIST[@]}"; do
            out="$SAVE_DIR/baselines/$split/$forget_loss/lr_${LR}/seed$seed"
            unlearn_and_eval "$out" "$split" --forget_loss "$forget_loss" --optim_cfg adam --lr "$LR" \
                --forget_lr "$LR" --forget_coeff "$FORGET_COEFF" --regularization_coeff 1.0 --mask --seed "$seed"
        done
    done
done
flush_jobs
python "$REPO_ROOT/LLM/parse_result.py" --root "$SAVE_DIR/baselines" --save_csv "$SAVE_DIR/baselines/summary.csv"
