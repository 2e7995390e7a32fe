# The launcher of the image-generation sweeps; sourced by ddpm_cifar10_sfron.sh and dit_sfron.sh (not run on
# its own).
#
# Environment (all optional):
#   LAUNCHER    unset (default): each step runs here in turn, as `python -m MODULE ...`; local | slurm: each
#               step is one job of common.sweep, with JOBS, RUNS_PER_GPU, CLUSTER, SWEEP_FLAGS (scripts/launch.sh)
#   SAVE_DIR    with LAUNCHER set: where each job's folder goes, $SAVE_DIR/<job>/ with its log.txt and the
#               file `done` once it finished (default: runs/ImageGeneration). The runs themselves write
#               where they always do: a run folder is named when it starts (its time or number), so the
#               sweep marks a finished job with `done` instead of a file of the run.
# With LAUNCHER set a main_forget run takes --resume, so a requeued job continues from its snapshot, and a
# job whose `done` exists is skipped.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$REPO/scripts/launch.sh"
if [[ -n "${LAUNCHER:-}" ]]; then
  SAVE_DIR="${SAVE_DIR:-runs/ImageGeneration}"
fi

# step JOB MODULE ARGS...: `python -m MODULE ARGS...` here, or (LAUNCHER set) queued as the job
# $SAVE_DIR/JOB: the module's file runs in the job's process (common.sweep), then `done` is written
step() {
  local job="$1" module="$2"; shift 2
  if [[ -z "${LAUNCHER:-}" ]]; then
    python -m "$module" "$@"
    return
  fi
  local out="$SAVE_DIR/$job" resume=()
  if [[ "$module" == *.main_forget ]]; then resume=(--resume); fi
  mkdir -p "$out"
  queue_job "$out" done python "$REPO/${module//.//}.py" "$@" "${resume[@]}" --and-then touch "$out/done"
}
