# Shared settings of the image-classification sweeps; sourced by the other scripts (not run on its own).
#
# Environment (all optional):
#   DATA        dataset root, or an ImageFolder tree/zip for cifar10 (unset: scikit-learn digits, no download)
#   DATASET     cifar10 | cifar100 | svhn | TinyImagenet | digits   (default: cifar10 with DATA, else digits)
#   ARCH        model architecture (default: resnet18 with DATA, else resnet20s)
#   MODEL_PATH  original model (unset: one is trained into $SAVE_DIR/original on first use, main_train.py)
#   SAVE_DIR    output root (default: runs/ImageClassification); run k of a setting goes to
#               $SAVE_DIR/<method>_<optim>_lr<lr>/seed<k> (eval_result.json, log.txt, checkpoints)
#   NUM_FORGET  --num_indexes_to_replace (default: 4500 with DATA, else 130 = 10% of digits)
#   SEEDS       seeds of each setting (default: "1 2 3 4 5", the paper's protocol)
#   OPTIM       sgd | adam | dual | dual_aa | dual_as (default: dual)
#   RETAIN_LR   --retain_lr (default: 0.01 for sgd/dual, 1e-4 for adam/dual_aa, as the paper fixes it)
#   EPOCHS      --unlearn_epochs (default: 10 with DATA, else 5)
#   TRAIN_EPOCHS epochs of the original model and of retrain (default: 182 with DATA, else 12)
#   TRAIN_LR    schedule of the original model (main_train.py): periodic = --periodic_cosine_lr, the 20-epoch
#               cosine cycle from lr 0 that trained the paper's models (default with DATA); multistep = lr / 10
#               at 1/2 and 3/4 of TRAIN_EPOCHS (default on digits, whose 12 epochs would stop mid-cycle)
#   DEVICE      --device (cpu | cuda | cuda:1; default: cuda when available, else cpu)
#   SKIP_DONE   1: skip runs whose eval_result.json exists (default: 0, rerun with --overwrite)
#   EXTRA       extra flags appended to every run (e.g. "--batch_size 128 --mia salun")
#   LAUNCHER    unset: each run starts here in turn (as below); local | slurm: through common.sweep, with
#               JOBS, RUNS_PER_GPU, CLUSTER, SWEEP_FLAGS (scripts/launch.sh). Runs then take --resume, their
#               output stays in <run>/log.txt, and a run whose run.json exists is skipped.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO/scripts/launch.sh"
IC="$REPO/ImageClassification"
SAVE_DIR="${SAVE_DIR:-runs/ImageClassification}"
mkdir -p "$SAVE_DIR"
SEEDS="${SEEDS:-1 2 3 4 5}"
OPTIM="${OPTIM:-dual}"
case "$OPTIM" in sgd|adam|dual|dual_as|dual_aa) ;; *) echo "error: OPTIM must be sgd|adam|dual|dual_as|dual_aa, got $OPTIM" >&2; exit 2 ;; esac
if [[ -n "${DATA:-}" ]]; then
  DATASET="${DATASET:-cifar10}"; ARCH="${ARCH:-resnet18}"; NUM_FORGET="${NUM_FORGET:-4500}"
  EPOCHS="${EPOCHS:-10}"; TRAIN_EPOCHS="${TRAIN_EPOCHS:-182}"; DATA_FLAGS=(--data "$DATA")
else
  DATASET="${DATASET:-digits}"; ARCH="${ARCH:-resnet20s}"; NUM_FORGET="${NUM_FORGET:-130}"
  EPOCHS="${EPOCHS:-5}"; TRAIN_EPOCHS="${TRAIN_EPOCHS:-12}"; DATA_FLAGS=()
fi
COMMON_FLAGS=(--dataset "$DATASET" --arch "$ARCH" --num_indexes_to_replace "$NUM_FORGET" "${DATA_FLAGS[@]}")
if [[ -n "${DEVICE:-}" ]]; then COMMON_FLAGS+=(--device "$DEVICE"); fi
# shellcheck disable=SC2206
if [[ -n "${EXTRA:-}" ]]; then COMMON_FLAGS+=($EXTRA); fi
# the training schedule of retrain (and of main_train.py with TRAIN_LR=multistep): lr / 10 at 1/2 and 3/4 of
# the epochs (91,136 of 182)
TRAIN_SCHEDULE=(--decreasing_lr "$((TRAIN_EPOCHS / 2)),$((TRAIN_EPOCHS * 3 / 4))")
if [[ -n "${DATA:-}" ]]; then TRAIN_LR="${TRAIN_LR:-periodic}"; else TRAIN_LR="${TRAIN_LR:-multistep}"; fi
case "$TRAIN_LR" in
  periodic) ORIGINAL_SCHEDULE=(--periodic_cosine_lr) ;;
  multistep) ORIGINAL_SCHEDULE=("${TRAIN_SCHEDULE[@]}") ;;
  *) echo "error: TRAIN_LR must be periodic|multistep, got $TRAIN_LR" >&2; exit 2 ;;
esac

# retain_lr as the paper fixes it: 0.01 with SGD retaining (sgd, dual), 1e-4 with Adam retaining
default_retain_lr() { if [[ "$1" == adam || "$1" == dual_aa ]]; then echo 1e-4; else echo 0.01; fi; }
RETAIN_LR="${RETAIN_LR:-$(default_retain_lr "$OPTIM")}"
# a forget learning rate of the right order for the optimizer family: SGD ~1e-2, Adam ~1e-4
default_forget_lr() { if [[ "$1" == sgd ]]; then echo "$2"; else echo "$3"; fi; }

# The original model: $MODEL_PATH, or one trained once into $SAVE_DIR/original (log: $SAVE_DIR/original.log).
original_model() {
  if [[ -n "${MODEL_PATH:-}" ]]; then
    [[ -f "$MODEL_PATH" ]] || { echo "error: MODEL_PATH $MODEL_PATH does not exist" >&2; exit 2; }
    echo "$MODEL_PATH"; return
  fi
  local out="$SAVE_DIR/original"
  if [[ -n "${LAUNCHER:-}" ]]; then
    now_begin
    queue_job "$out" run.json python "$IC/main_train.py" "${COMMON_FLAGS[@]}" --epochs "$TRAIN_EPOCHS" --lr 0.1 \
      "${ORIGINAL_SCHEDULE[@]}" --save_dir "$out" --overwrite --resume
    now_end
  elif [[ ! -f "$out/0model_SA_best.pth.tar" ]]; then
    echo "== training the original model -> $out" >&2
    python "$IC/main_train.py" "${COMMON_FLAGS[@]}" --epochs "$TRAIN_EPOCHS" --lr 0.1 "${ORIGINAL_SCHEDULE[@]}" \
      --save_dir "$out" --overwrite > "$SAVE_DIR/original.log" 2>&1 \
      || { echo "error: training the original model failed, see $SAVE_DIR/original.log" >&2; exit 1; }
  fi
  echo "$out/0model_SA_best.pth.tar"
}

# run NAME SCRIPT FLAGS...: one setting over $SEEDS, seed k in $SAVE_DIR/NAME/seed<k> with its stdout in log.txt;
# the result lines are echoed. Stops at the first failing run. With LAUNCHER set the runs are queued instead
# (the script's flush_jobs runs them).
run() {
  local name="$1" script="$2"; shift 2
  local seed out
  for seed in $SEEDS; do
    out="$SAVE_DIR/$name/seed$seed"
    if [[ -n "${LAUNCHER:-}" ]]; then
      queue_job "$out" run.json python "$IC/$script" "${COMMON_FLAGS[@]}" --seed "$seed" --save_dir "$out" \
        --overwrite --resume "$@"
      continue
    fi
    if [[ "${SKIP_DONE:-0}" == 1 && -f "$out/eval_result.json" ]]; then echo "== $name seed $seed: done, skipped"; continue; fi
    mkdir -p "$out"
    echo "== $name seed $seed -> $out"
    if ! python "$IC/$script" "${COMMON_FLAGS[@]}" --seed "$seed" --save_dir "$out" --overwrite "$@" 2>&1 \
        | tee "$out/log.txt" | { grep -E "^(retain|forget|test) acc|^MIA" || true; }; then
      echo "error: $name seed $seed failed, see $out/log.txt" >&2; exit 1
    fi
  done
}
