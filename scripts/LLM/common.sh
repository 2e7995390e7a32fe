# Shared settings of the LLM sweeps; sourced by the other scripts, not run directly.
#
# Environment (all optional except MODEL_PATH and DATA_PATH):
#   MODEL_PATH      model to start from (hub id or folder): the fine-tuned model for the unlearning
#                   sweeps, the pre-trained model for finetune.sh                 [required]
#   DATA_PATH       TOFU folder (closer-look or locuslab/TOFU layout) or hub id    [required]
#   SAVE_DIR        root of all outputs                                           (results)
#   RETAIN_ROOT     folder with <split>/eval_log_forget.json of the retain model,
#                   enabling forget quality                                       ($SAVE_DIR/retain_eval)
#   MODEL_FAMILY    prompt template (LLM/config/model_config.yaml: phi1.5, llama2-7b, llama3-8b, plain)  (phi1.5)
#   SEEDS           seeds of each setting                                         (1001 1002 1003)
#   SPLITS          forget splits                                                 (forget10)
#   TASK_ID         TOFU task (1 is the standard benchmark)                        (1)
#   NUM_EPOCHS      unlearning epochs                                             (5)
#   LAUNCH          how to start a script, e.g.
#                   "accelerate launch --config_file LLM/config/accelerate/zero2.yaml"   (python)
#   NUM_PROCESSES   processes LAUNCH starts: unlearning runs take --gradient_accumulation_steps 8/NUM_PROCESSES,
#                   so the effective batch stays the original's 40 (batch 5 x accumulation 4 x 2 GPUs)  (1)
#   SAVE_STEPS      --save_steps of the unlearning runs: last, steps_per_epoch or a step count  (last)
#   EVAL_STEPS      unlearning steps to evaluate (eval.py --eval_unlearn_step), e.g. with
#                   SAVE_STEPS=steps_per_epoch "0 50 100 150 200 250"; 0 is the model before unlearning  (last)
#   EXTRA_ARGS      appended to every training, unlearning and evaluation command, e.g. "--device cpu"  ()
#   TRAIN_ARGS      appended to training / unlearning commands only, e.g.
#                   "--batch_size 2 --gradient_accumulation_steps 1 --max_length 64"  ()
#   EVAL_ARGS       appended to evaluation commands only, e.g. "--ds_size 50 --max_new_tokens 32"  ()
#   LAUNCHER        unset: each run starts here in turn; local | slurm: each run (its unlearning and
#                   evaluations) is one job of common.sweep, with JOBS, RUNS_PER_GPU, CLUSTER, SWEEP_FLAGS
#                   (scripts/launch.sh); a multi-GPU job sets LAUNCH to accelerate launch and CLUSTER's gpus
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO_ROOT/scripts/launch.sh"
: "${MODEL_PATH:?set MODEL_PATH to the model to start from (see scripts/LLM/common.sh)}"
: "${DATA_PATH:?set DATA_PATH to the TOFU data folder (or locuslab/TOFU)}"
SAVE_DIR="${SAVE_DIR:-results}"
RETAIN_ROOT="${RETAIN_ROOT:-$SAVE_DIR/retain_eval}"
MODEL_FAMILY="${MODEL_FAMILY:-phi1.5}"
read -r -a SEED_LIST <<< "${SEEDS:-1001 1002 1003}"
read -r -a SPLIT_LIST <<< "${SPLITS:-forget10}"
TASK_ID="${TASK_ID:-1}"
NUM_EPOCHS="${NUM_EPOCHS:-5}"
read -r -a START <<< "${LAUNCH:-python}"
NUM_PROCESSES="${NUM_PROCESSES:-1}"
if (( NUM_PROCESSES < 1 || 8 % NUM_PROCESSES != 0 )); then
    echo "error: NUM_PROCESSES=$NUM_PROCESSES: expected 1, 2, 4 or 8 (effective batch 40 = 5 x 8 / processes x processes)" >&2
    exit 2
fi
ACCUMULATION=$((8 / NUM_PROCESSES))
SAVE_STEPS="${SAVE_STEPS:-last}"
read -r -a EVAL_STEP_LIST <<< "${EVAL_STEPS:-last}"
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"
read -r -a EVAL_EXTRA <<< "${EVAL_ARGS:-}"

# unlearn_and_eval OUT_DIR SPLIT [main_forget.py flags...]
# Unlearns task $TASK_ID of SPLIT into OUT_DIR, then evaluates each of $EVAL_STEPS (with forget quality
# when the retain model's statistics for SPLIT exist under $RETAIN_ROOT).  Training and unlearning run
# with --resume, so a rerun of a sweep skips finished runs and continues interrupted ones.
unlearn_and_eval() {
    as_job "$1" "$TASK_ID/unlearn_times_1/eval_results-${EVAL_STEP_LIST[-1]}/run.json" unlearn_and_eval_commands "$@"
}

# as_job OUT_DIR DONE_FILE FUNCTION ARGS...: FUNCTION ARGS, here and now; with LAUNCHER set, one queued job
# (done once OUT_DIR/DONE_FILE exists) of the commands FUNCTION starts through START, which then records
# them instead of running them. The script's flush_jobs runs the queued jobs.
as_job() {
    local out_dir="$1" done_file="$2"
    shift 2
    if [[ -z "${LAUNCHER:-}" ]]; then "$@"; return; fi
    local commands=()
    local START=(record_command "${START[@]}")
    "$@"
    queue_job "$out_dir" "$done_file" "${commands[@]:0:${#commands[@]}-1}"
}
record_command() { commands+=("$@" --and-then); }

unlearn_and_eval_commands() {
    local out_dir="$1" split="$2"
    shift 2
    "${START[@]}" "$REPO_ROOT/LLM/main_forget.py" --model_family "$MODEL_FAMILY" --model_path "$MODEL_PATH" \
        --data_path "$DATA_PATH" --split "$split" --task_list "$TASK_ID" --num_epochs "$NUM_EPOCHS" \
        --save_dir "$out_dir" --gradient_accumulation_steps "$ACCUMULATION" --save_steps "$SAVE_STEPS" --resume \
        "$@" "${EXTRA[@]}" "${TRAIN_EXTRA[@]}"
    local retain=()
    if [[ -f "$RETAIN_ROOT/$split/eval_log_forget.json" ]]; then
        retain=(--retain_result "$RETAIN_ROOT/$split")
    fi
    local step
    for step in "${EVAL_STEP_LIST[@]}"; do
        "${START[@]}" "$REPO_ROOT/LLM/eval.py" --model_family "$MODEL_FAMILY" --model_path "$MODEL_PATH" \
            --unlearn_dir "$out_dir/$TASK_ID/unlearn_times_1" --eval_unlearn_step "$step" --data_path "$DATA_PATH" \
            --split "$split" --task_id "$TASK_ID" "${retain[@]}" "${EXTRA[@]}" "${EVAL_EXTRA[@]}"
    done
}
