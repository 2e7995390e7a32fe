#!/usr/bin/env bash
# Baselines over $SEEDS with $OPTIM (SFR-on-version MIA by default).
#   METHODS  default "retrain FT GA RL l1-sparse boundary_shrink boundary_expanding fisher wfisher"
#   LR_<METHOD> (e.g. LR_GA=1e-4, LR_l1_sparse=0.01) or LR for all; defaults below. RETAIN_LR as common.sh.
#   ALPHA    --alpha of l1-sparse (l1 weight) and fisher/wfisher (noise scale), default 0.2
# retrain always trains from scratch with SGD at 0.1 for TRAIN_EPOCHS (the reference), whatever OPTIM is.
# FT and GA are single-objective: under OPTIM=dual* they step the retain-side SGD at RETAIN_LR (research code).
source "$(dirname "$0")/common.sh"
METHODS="${METHODS:-retrain FT GA RL l1-sparse boundary_shrink boundary_expanding fisher wfisher}"
for method in $METHODS; do
  case "$method" in
    retrain|FT|GA|RL|FT_prune|l1-sparse|FT_l1|GA_l1|boundary_shrink|boundary_expanding|fisher|wfisher) ;;
    *) echo "error: METHODS: unknown baseline $method" >&2; exit 2 ;;
  esac
done
MODEL=""
if [[ "$METHODS" != retrain ]]; then MODEL="$(original_model)"; fi
for method in $METHODS; do
  var="LR_${method//-/_}"
  optim="$OPTIM"; script=main_forget.py; epochs="$EPOCHS"; extra=()
  case "$method" in
    retrain) lr="${!var:-0.1}"; optim=sgd; epochs="$TRAIN_EPOCHS"; extra=("${TRAIN_SCHEDULE[@]}") ;;
    RL)      lr="${!var:-${LR:-$(default_forget_lr "$OPTIM" 0.01 1e-4)}}"; script=main_random.py ;;
    GA)      lr="${!var:-${LR:-$(default_forget_lr "$OPTIM" 1e-4 1e-5)}}" ;;
    *)       lr="${!var:-${LR:-$(default_forget_lr "$OPTIM" 0.01 1e-4)}}" ;;
  esac
  if [[ "$method" != retrain ]]; then extra+=(--model_path "$MODEL" --retain_lr "$RETAIN_LR"); fi
  run "${method}_${optim}_lr${lr}" "$script" --unlearn "$method" --unlearn_epochs "$epochs" --unlearn_lr "$lr" \
    --optim "$optim" --alpha "${ALPHA:-0.2}" "${extra[@]}"
done
flush_jobs
