# Shared settings of the image-classification sweeps; sourced by the other scripts.
#
# Environment (all optional):
#   DATA        dataset root or ImageFolder tree/zip (unset: scikit-learn digits, no download)
#   DATASET     cifar10 | cifar100 | svhn | TinyImagenet | digits   (default: cifar10 with DATA, else digits)
#   ARCH        model architecture (default: resnet18 with DATA, else resnet20s)
#   MODEL_PATH  original model (unset: train one into $SAVE_DIR/original on first use)
#   SAVE_DIR    output root (default: runs/ImageClassification)
#   NUM_FORGET  --num_indexes_to_replace (default: 4500 with DATA, else 130 = 10% of digits)
#   SEEDS       seeds of each setting (default: "1 2 3 4 5")
#   OPTIM       sgd | adam | dual | dual_aa | dual_as (default: dual)
#   EPOCHS      --unlearn_epochs (default: 10 with DATA, else 5)
#   DEVICE      --device (default: cuda when available, else cpu)
#   EXTRA       extra flags appended to every run
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IC="$REPO/ImageClassification"
SAVE_DIR="${SAVE_DIR:-runs/ImageClassification}"
mkdir -p "$SAVE_DIR"
SEEDS="${SEEDS:-1 2 3 4 5}"
OPTIM="${OPTIM:-dual}"
if [[ -n "${DATA:-}" ]]; then
  DATASET="${DATASET:-cifar10}"; ARCH="${ARCH:-resnet18}"; NUM_FORGET="${NUM_FORGET:-4500}"
  EPOCHS="${EPOCHS:-10}"; TRAIN_EPOCHS="${TRAIN_EPOCHS:-182}"; DATA_FLAGS=(--data "$DATA")
else
  DATASET="${DATASET:-digits}"; ARCH="${ARCH:-resnet20s}"; NUM_FORGET="${NUM_FORGET:-130}"
  EPOCHS="${EPOCHS:-5}"; TRAIN_EPOCHS="${TRAIN_EPOCHS:-12}"; DATA_FLAGS=()
fi
COMMON_FLAGS=(--dataset "$DATASET" --arch "$ARCH" --num_indexes_to_replace "$NUM_FORGET" "${DATA_FLAGS[@]}")
[[ -n "${DEVICE:-}" ]] && COMMON_FLAGS+=(--device "$DEVICE")
# shellcheck disable=SC2206
[[ -n "${EXTRA:-}" ]] && COMMON_FLAGS+=($EXTRA)

# retain_lr as the seed README fixes it: 0.01 for SGD-based retaining, 1e-4 for Adam
default_retain_lr() { [[ "$1" == "adam" || "$1" == "dual_aa" ]] && echo 1e-4 || echo 0.01; }

# The original model: $MODEL_PATH, or one trained once into $SAVE_DIR/original.
original_model() {
  if [[ -n "${MODEL_PATH:-}" ]]; then echo "$MODEL_PATH"; return; fi
  local out="$SAVE_DIR/original"
  if [[ ! -f "$out/0model_SA_best.pth.tar" ]]; then
    python "$IC/main_train.py" "${COMMON_FLAGS[@]}" --epochs "$TRAIN_EPOCHS" --lr 0.1 \
      --decreasing_lr "$((TRAIN_EPOCHS / 2)),$((TRAIN_EPOCHS * 3 / 4))" --save_dir "$out" --overwrite \
      > "$out.log" 2>&1 || { echo "training the original model failed, see $out.log" >&2; exit 1; }
  fi
  echo "$out/0model_SA_best.pth.tar"
}

# run NAME SCRIPT FLAGS...: one setting over $SEEDS, each seed in $SAVE_DIR/NAME/seed<k> with its log.txt
run() {
  local name="$1" script="$2"; shift 2
  for seed in $SEEDS; do
    local out="$SAVE_DIR/$name/seed$seed"
    mkdir -p "$out"
    echo "== $name seed $seed -> $out"
    python "$IC/$script" "${COMMON_FLAGS[@]}" --seed "$seed" --save_dir "$out" --overwrite "$@" \
      2>&1 | tee "$out/log.txt" | grep -E "^(retain|forget|test) acc|^MIA" || true
    [[ -f "$out/eval_result.json" ]] || { echo "run failed, see $out/log.txt" >&2; exit 1; }
  done
}
