#!/usr/bin/env bash
# Real-world unlearning (forget / neighbor sets) with the baselines' joint AdamW and with DualOptim,
# over seeds; each run is evaluated on the forget and neighbor sets.
#
#   MODEL_PATH=meta-llama/Meta-Llama-3-8B-Instruct DATA_PATH=data/real_world MODEL_FAMILY=llama3-8b \
#       LAUNCH="accelerate launch --config_file LLM/config/accelerate/zero3.yaml" bash scripts/LLM/real_world.sh
#
# Extra environment (see common.sh for the rest): FORGET_LOSSES ("ME+GD IDK+AP"), LR (5e-6),
# FORGET_LR (1e-5), RETAIN_FREQ (5), OPTIMS ("adam dual_adam"), DOWNSTREAM_TASKS (lm-eval tasks, e.g.
# "arc_challenge,mmlu,truthfulqa,triviaqa,gsm8k"; empty: skip).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
read -r -a LOSSES <<< "${FORGET_LOSSES:-ME+GD IDK+AP}"
read -r -a OPTIMS <<< "${OPTIMS:-adam dual_adam}"
LR="${LR:-5e-6}"
FORGET_LR="${FORGET_LR:-1e-5}"
RETAIN_FREQ="${RETAIN_FREQ:-5}"
DOWNSTREAM_TASKS="${DOWNSTREAM_TASKS:-}"

# unlearn_and_eval_real_world OUT_DIR FORGET_LOSS OPTIM [SCHEDULE FLAGS...]
unlearn_and_eval_real_world() {
    local out="$1" forget_loss="$2" optim="$3"
    shift 3
    local schedule=("$@")
    "${START[@]}" "$REPO_ROOT/LLM/real_world_unlearn.py" --model_family "$MODEL_FAMILY" \
        --model_path "$MODEL_PATH" --data_path "$DATA_PATH" --forget_loss "$forget_loss" --optim_cfg "$optim" \
        "${schedule[@]}" --lr "$LR" --forget_lr "$FORGET_LR" --num_epochs "$NUM_EPOCHS" --seed "$seed" \
        --save_dir "$out" --resume "${EXTRA[@]}" "${TRAIN_EXTRA[@]}"
    "${START[@]}" "$REPO_ROOT/LLM/real_world_eval.py" --model_family "$MODEL_FAMILY" \
        --model_path "$MODEL_PATH" --data_path "$DATA_PATH" --save_dir "$out" \
        --downstream_tasks "$DOWNSTREAM_TASKS" "${EXTRA[@]}" "${EVAL_EXTRA[@]}"
}

for forget_loss in "${LOSSES[@]}"; do
    for optim in "${OPTIMS[@]}"; do
        schedule=()
        [[ "$optim" == dual* ]] && schedule=(--alternate --retain_freq "$RETAIN_FREQ")
        for seed in "${SEED_LIST[@]}"; do
            out="$SAVE_DIR/real_world/optim_$optim/$forget_loss/lr_${FORGET_LR}_${LR}/seed$seed"
            as_job "$out" aggregate_stat.json \
                unlearn_and_eval_real_world "$out" "$forget_loss" "$optim" "${schedule[@]}"
        done
    done
done
flush_jobs
python "$REPO_ROOT/LLM/parse_result.py" --root "$SAVE_DIR/real_world" --save_csv "$SAVE_DIR/real_world/summary.csv"
