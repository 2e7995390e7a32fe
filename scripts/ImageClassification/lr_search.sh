#!/usr/bin/env bash
# Learning-rate search for one method and optimizer, as the paper's protocol: retain_lr fixed
# (0.01 with SGD retaining, 1e-4 with Adam), --unlearn_lr swept over LRS, every value over SEEDS,
# then the parse_result table (lowest average gap wins) and the avg-gap-vs-lr plot.
#   METHOD=salun|sfron|scrub (default salun)  LRS="1e-4 2e-4 5e-4"  RETRAIN=1 (also run retrain as reference)
source "$(dirname "$0")/common.sh"
METHOD="${METHOD:-salun}"
LRS="${LRS:-$([[ "$OPTIM" == sgd ]] && echo "0.005 0.01 0.02" || echo "1e-4 2e-4 5e-4")}"
if [[ "${RETRAIN:-1}" == 1 ]]; then
  METHODS=retrain SEEDS="$SEEDS" bash "$(dirname "$0")/baselines.sh"
fi
for lr in $LRS; do
  LR="$lr" bash "$(dirname "$0")/$METHOD.sh"
done
python "$IC/parse_result.py" --log_paths "$SAVE_DIR" --format markdown --plot "$SAVE_DIR/${METHOD}_${OPTIM}_avg_gap.png"
