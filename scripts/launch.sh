# The launcher of the sweeps (sourced by the common.sh of ImageClassification, LLM and ImageGeneration, not
# run directly).
#
# Environment (all optional):
#   LAUNCHER      unset (default): each run starts here, one after another, as the sweeps always did;
#                 local: the runs go through `python -m common.sweep` on this machine (JOBS at a time, or
#                 RUNS_PER_GPU on each visible GPU); slurm: as SLURM jobs through submitit
#   JOBS          local: runs at a time, one process each (1)
#   RUNS_PER_GPU  runs side by side on each GPU (local: every visible GPU; slurm: packed into one job)
#   CLUSTER       YAML file of SLURM settings (partition, account, qos, time, gpus, cpus, mem_gb,
#                 array_parallelism, runs_per_gpu, setup; README "Running on a cluster")
#   SWEEP_FLAGS   more flags of common.sweep, e.g. "--dry_run" or "--slurm_partition gpu --slurm_time 600"
#
# With LAUNCHER set, queue_job adds a run to the sweep's jobs file and flush_jobs runs the queued runs (only
# the script that created the file runs them, so lr_search.sh runs every lr of its sub-scripts at once);
# the jobs queued between now_begin and now_end run before the script goes on (a model the others need). A
# run whose done-file exists is skipped whichever launcher finished it. Failed runs are listed at the end (exit status 1).

# open_jobs: start the jobs file of this script, unless a calling script has one (its runs go there)
open_jobs() {
  if [[ -z "${SWEEP_JOBS_FILE:-}" ]]; then
    mkdir -p "$SAVE_DIR/.sweep"
    SWEEP_JOBS_FILE="$SAVE_DIR/.sweep/jobs-$$-$RANDOM.txt"
    SWEEP_OWNER=$$
    : > "$SWEEP_JOBS_FILE"
    export SWEEP_JOBS_FILE SWEEP_OWNER
  fi
}

# queue_job SAVE_DIR DONE_FILE COMMAND... [--and-then COMMAND...]...
queue_job() {
  open_jobs
  printf '%q ' "$@" >> "$SWEEP_JOBS_FILE"
  printf '\n' >> "$SWEEP_JOBS_FILE"
}

# sweep_run JOBS_FILE: the jobs of the file through the launcher (progress on stderr)
sweep_run() {
  local flags=(--launcher "$LAUNCHER" --jobs "${JOBS:-1}")
  if [[ -n "${RUNS_PER_GPU:-}" ]]; then flags+=(--runs_per_gpu "$RUNS_PER_GPU"); fi
  if [[ -n "${CLUSTER:-}" ]]; then flags+=(--cluster "$CLUSTER"); fi
  # shellcheck disable=SC2206
  if [[ -n "${SWEEP_FLAGS:-}" ]]; then flags+=($SWEEP_FLAGS); fi
  PYTHONPATH="$SWEEP_REPO${PYTHONPATH:+:$PYTHONPATH}" python -m common.sweep "$1" "${flags[@]}" >&2
}

# flush_jobs: run the queued jobs, if this script queued them
flush_jobs() {
  if [[ -n "${SWEEP_JOBS_FILE:-}" && "${SWEEP_OWNER:-}" == "$$" ]]; then
    sweep_run "$SWEEP_JOBS_FILE"
    rm -f "$SWEEP_JOBS_FILE"
    unset SWEEP_JOBS_FILE SWEEP_OWNER
  fi
}

# now_begin ... now_end: the jobs queued between them run at now_end, before the script goes on (what
# later runs depend on: the original model, SalUn's masks); the script's other queued jobs stay queued.
# Both do nothing with LAUNCHER unset, where every run has finished when its command returns.
now_begin() {
  [[ -n "${LAUNCHER:-}" ]] || return 0
  SWEEP_SAVED=("${SWEEP_JOBS_FILE:-}" "${SWEEP_OWNER:-}")
  unset SWEEP_JOBS_FILE SWEEP_OWNER
  open_jobs
}
now_end() {
  [[ -n "${LAUNCHER:-}" ]] || return 0
  flush_jobs
  if [[ -n "${SWEEP_SAVED[0]}" ]]; then
    SWEEP_JOBS_FILE="${SWEEP_SAVED[0]}" SWEEP_OWNER="${SWEEP_SAVED[1]}"
    export SWEEP_JOBS_FILE SWEEP_OWNER
  fi
}

SWEEP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${LAUNCHER:-}" in
  ""|local|slurm) ;;
  *) echo "error: LAUNCHER must be local or slurm (or unset), got $LAUNCHER" >&2; exit 2 ;;
esac
