#!/usr/bin/env bash
# Fine-tune the "original" model on all TOFU pairs and, per forget split, the "retain" reference model on
# the split's complement (retain99/95/90 for forget01/05/10, the Hugging Face names; the closer-look
# folder only has retain90, for forget10), then evaluate each retain model on its forget
# set so the unlearning sweeps can report forget quality.
#
#   MODEL_PATH=microsoft/phi-1_5 DATA_PATH=data/tofu SPLITS="forget10" bash scripts/LLM/finetune.sh
#   -> $SAVE_DIR/ft/full (MODEL_PATH of the sweeps), $SAVE_DIR/ft/retainNN, $RETAIN_ROOT/<split>/
#
# Extra environment (see common.sh for the rest): FT_LR (1e-5), FT_EPOCHS (5), FT_SEED (42).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
FT_LR="${FT_LR:-1e-5}"
FT_EPOCHS="${FT_EPOCHS:-5}"
FT_SEED="${FT_SEED:-42}"

train() {  # train SPLIT OUT_DIR
    "${START[@]}" "$REPO_ROOT/LLM/main_train.py" --model_family "$MODEL_FAMILY" --model_path "$MODEL_PATH" \
        --data_path "$DATA_PATH" --split "$1" --lr "$FT_LR" --num_epochs "$FT_EPOCHS" --seed "$FT_SEED" \
        --save_dir "$2" --resume "${EXTRA[@]}" "${TRAIN_EXTRA[@]}"
}

retain_and_eval() {  # retain_and_eval SPLIT RETAIN_SPLIT: the split's retain model and its forget-set statistics
    train "$2" "$SAVE_DIR/ft/$2"
    "${START[@]}" "$REPO_ROOT/LLM/eval.py" --model_family "$MODEL_FAMILY" --model_path "$SAVE_DIR/ft/$2" \
        --data_path "$DATA_PATH" --split "$1" --task_id "$TASK_ID" --save_dir "$RETAIN_ROOT/$1" \
        "${EXTRA[@]}" "${EVAL_EXTRA[@]}"
}

# with LAUNCHER set, a job's log goes to $SAVE_DIR/ft/jobs/<name>/log.txt: main_train.py replaces its --save_dir
# as a whole when it finishes
as_job "$SAVE_DIR/ft/jobs/full" "$(realpath -m "$SAVE_DIR/ft/full/run.json")" train full "$SAVE_DIR/ft/full"
for split in "${SPLIT_LIST[@]}"; do
    retain_split="retain$((100 - 10#${split#forget}))"
    as_job "$SAVE_DIR/ft/jobs/$retain_split" "$(realpath -m "$RETAIN_ROOT/$split/run.json")" \
        retain_and_eval "$split" "$retain_split"
done
flush_jobs
