#!/usr/bin/env bash
# Baselines over seeds with one optimizer: METHODS (default "retrain FT GA RL"), LR per method via
# LR_<METHOD> (e.g. LR_GA=1e-4), and ALPHA for l1-sparse / fisher / wfisher.
source "$(dirname "$0")/common.sh"
METHODS="${METHODS:-retrain FT GA RL}"
OPTIM="${BASELINE_OPTIM:-sgd}"
for method in $METHODS; do
  var="LR_${method//-/_}"
  case "$method" in
    retrain) lr="${!var:-0.1}";  script=main_forget.py; epochs="${RETRAIN_EPOCHS:-$TRAIN_EPOCHS}" ;;
    RL)      lr="${!var:-0.01}"; script=main_random.py; epochs="$EPOCHS" ;;
    GA)      lr="${!var:-1e-4}"; script=main_forget.py; epochs="$EPOCHS" ;;
    *)       lr="${!var:-0.01}"; script=main_forget.py; epochs="$EPOCHS" ;;
  esac
  flags=(--unlearn "$method" --unlearn_epochs "$epochs" --unlearn_lr "$lr" --optim "$OPTIM" --alpha "${ALPHA:-0.2}")
  [[ "$method" != retrain ]] && flags+=(--model_path "$(original_model)")
  run "${method}_${OPTIM}_lr${lr}" "$script" "${flags[@]}"
done
