#!/usr/bin/env bash
# The paper's CIFAR-10 ResNet-18 random-10% protocol on one GPU, through the evidence benchmark
# (benchmarks/evidence/ic.py): the original model (182 epochs), Retrain on seeds 1-3, then SalUn,
# SFR-on and SCRUB with --optim sgd and dual over log-spaced learning-rate grids (unlearning 10 epochs at
# batch 256: 180 forget + 1,590 retain steps; SFR-on 1,500 + 300), the best setting of each on every seed.
#
#   DATA=/path/to/cifar10-jpeg.zip benchmarks/paper_scale_gpu.sh          # full length: many GPU hours
#   DATA=/path/to/cifar10-jpeg.zip benchmarks/paper_scale_gpu.sh short    # a few minutes: CUDA path + images/s
#
# Every run holds the data on the GPU (--data_on_device). After the short run, paper_scale_projection.py
# prints the images/s per method x optimizer and the projected wall time of the full table.
#
# DATA: an ImageFolder zip/tree of CIFAR-10 (default ../shared/data/cifar10-jpeg.zip) or torchvision's
# CIFAR-10 folder. OUT: work folder (default runs/ic_paper_gpu[_short]). A rerun resumes: finished runs are
# skipped and an interrupted one continues from its snapshot. Results: $OUT/results.json, $OUT/gap_vs_lr.png,
# and per run $OUT/<method>_<optim>_lr<lr>_rlr<retain lr>/seed<k>/ (eval_result.json, run.json, log.txt).
#
# Where the runs go (README "Running on a cluster"): LAUNCHER=local (default) or slurm; RUNS_PER_GPU: runs
# side by side on each GPU (local: every visible GPU; slurm: packed into one job); JOBS: local runs at a
# time without RUNS_PER_GPU (default 1); CLUSTER: a YAML file of SLURM settings; LAUNCH_FLAGS: more flags,
# e.g. "--dry_run" or "--slurm_partition gpu".
#   LAUNCHER=slurm CLUSTER=cluster.yaml RUNS_PER_GPU=4 DATA=... benchmarks/paper_scale_gpu.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LENGTH="${1:-full}"
case "$LENGTH" in
  full) PRESET=paper_gpu ;;
  short) PRESET=paper_gpu_short ;;
  *) echo "error: the argument must be full or short, got $LENGTH" >&2; exit 2 ;;
esac
ARGS=(--preset "$PRESET" --device "${DEVICE:-cuda}" --threads "${THREADS:-8}")
if [[ -n "${DATA:-}" ]]; then ARGS+=(--data "$DATA"); fi
if [[ -n "${OUT:-}" ]]; then ARGS+=(--out "$OUT"); fi
ARGS+=(--launcher "${LAUNCHER:-local}" --jobs "${JOBS:-1}")
if [[ -n "${RUNS_PER_GPU:-}" ]]; then ARGS+=(--runs_per_gpu "$RUNS_PER_GPU"); fi
if [[ -n "${CLUSTER:-}" ]]; then ARGS+=(--cluster "$CLUSTER"); fi
# shellcheck disable=SC2206
if [[ -n "${LAUNCH_FLAGS:-}" ]]; then ARGS+=($LAUNCH_FLAGS); fi
cd "$REPO"
python benchmarks/ic_unlearning.py "${ARGS[@]}"
if [[ "$LENGTH" == short ]]; then  # images/s per method x optimizer, and the full table's projected wall time
  python benchmarks/paper_scale_projection.py "${OUT:-runs/ic_paper_gpu_short}/results.json"
fi
