#!/usr/bin/env bash
# Learning-rate search of one method and optimizer, the paper's protocol: retain_lr fixed (0.01 with SGD
# retaining: sgd, dual; 1e-4 with Adam: adam), --unlearn_lr swept over LRS, every value over SEEDS; then the
# parse_result table of these runs (lowest average gap wins) and the avg-gap-vs-lr plot
# $SAVE_DIR/<method>_<optim>_avg_gap.png.
#   METHOD   salun | sfron | scrub, or a baseline of baselines.sh (FT, GA, RL, l1-sparse, ...); default salun
#   LRS      default "0.005 0.01 0.02" for sgd, "1e-4 2e-4 5e-4" otherwise
#   RETRAIN  1 (default): run retrain over SEEDS as the reference; 0: use REF="UA RA TA MIA" or the
#            retrain runs already in $SAVE_DIR/retrain_sgd_lr0.1
# Other variables: see common.sh.
source "$(dirname "$0")/common.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
METHOD="${METHOD:-salun}"
LRS="${LRS:-$(if [[ "$OPTIM" == sgd ]]; then echo "0.005 0.01 0.02"; else echo "1e-4 2e-4 5e-4"; fi)}"
RETRAIN_DIR="$SAVE_DIR/retrain_sgd_lr${LR_retrain:-0.1}"
if [[ -n "${LAUNCHER:-}" ]]; then open_jobs; fi  # the runs of every lr (and retrain) go out together
if [[ "${RETRAIN:-1}" == 1 ]]; then
  METHODS=retrain bash "$HERE/baselines.sh"
fi
paths=()
for lr in $LRS; do
  case "$METHOD" in
    salun|sfron|scrub) LR="$lr" bash "$HERE/$METHOD.sh"; paths+=("$SAVE_DIR/${METHOD}_${OPTIM}_lr$lr") ;;
    *) METHODS="$METHOD" LR="$lr" bash "$HERE/baselines.sh"; paths+=("$SAVE_DIR/${METHOD}_${OPTIM}_lr$lr") ;;
  esac
done
flush_jobs
if [[ -n "${REF:-}" ]]; then
  # shellcheck disable=SC2206
  ref=(--ref $REF)
else
  ref=(); paths+=("$RETRAIN_DIR")
fi
python "$IC/parse_result.py" --log_paths "${paths[@]}" "${ref[@]}" --format markdown \
  --plot "$SAVE_DIR/${METHOD}_${OPTIM}_avg_gap.png"
