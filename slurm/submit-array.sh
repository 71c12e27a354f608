#!/usr/bin/env bash
# Submit an array backmap job and a merge job that runs when every array task succeeded.
#
#   slurm/submit-array.sh INPUT=big.h5 OUTPUT=big.aa.h5 SHARDS=16 [KEY=VALUE ...]
#
# KEY=VALUE are the parameters of slurm/backmap-array.sbatch (`python scripts/render_slurm.py --list
# slurm/backmap-array.sbatch`); MERGE_KEY=VALUE sets KEY of slurm/merge.sbatch (e.g. MERGE_TIME=01:00:00).
# OUTPUT, LDB_HPC, PARTITION and ACCOUNT are passed to both. LAST_SHARD is SHARDS-1. MAX_RUNNING=M lets at
# most M array tasks run at once (sbatch --array=0-LAST%M).
# The rendered job scripts are kept in $JOB_DIR (default ./ldb-jobs/YYYYmmdd-HHMMSS). Prints both job ids.
# Environment: PYTHON (default python3), SBATCH (default sbatch).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-python3}
SBATCH=${SBATCH:-sbatch}
RENDER=("$PYTHON" "$HERE/../scripts/render_slurm.py")
JOB_DIR=${JOB_DIR:-ldb-jobs/$(date +%Y%m%d-%H%M%S)}

array_args=() merge_args=() shards="" throttle=""
for item in "$@"; do
    case "$item" in
        *=*) ;;
        *) echo "error: expected KEY=VALUE, got '$item'" >&2; exit 2 ;;
    esac
    key=${item%%=*}
    case "$key" in
        MERGE_*) merge_args+=("${item#MERGE_}") ;;
        LAST_SHARD) echo "error: LAST_SHARD is computed from SHARDS" >&2; exit 2 ;;
        SHARDS) shards=${item#*=}; array_args+=("$item") ;;
        MAX_RUNNING) throttle=${item#*=} ;;
        OUTPUT|LDB_HPC|PARTITION|ACCOUNT) array_args+=("$item"); merge_args+=("$item") ;;
        *) array_args+=("$item") ;;
    esac
done
if ! [[ "$shards" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SHARDS must be a positive integer, got '${shards}'" >&2
    exit 2
fi
if [ -n "$throttle" ] && ! [[ "$throttle" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: MAX_RUNNING must be a positive integer, got '$throttle'" >&2
    exit 2
fi
array_opt=()
[ -z "$throttle" ] || array_opt=(--array="0-$((shards - 1))%$throttle")
mkdir -p "$JOB_DIR"
"${RENDER[@]}" "$HERE/backmap-array.sbatch" "${array_args[@]}" "LAST_SHARD=$((shards - 1))" \
    -o "$JOB_DIR/backmap-array.sbatch"
"${RENDER[@]}" "$HERE/merge.sbatch" "${merge_args[@]}" -o "$JOB_DIR/merge.sbatch"

array_id=$("$SBATCH" --parsable "${array_opt[@]}" "$JOB_DIR/backmap-array.sbatch")
array_id=${array_id%%;*}  # --parsable prints "id" or "id;cluster"
merge_id=$("$SBATCH" --parsable --dependency="afterok:$array_id" --kill-on-invalid-dep=yes "$JOB_DIR/merge.sbatch")
merge_id=${merge_id%%;*}
echo "array job $array_id ($shards tasks), merge job $merge_id (after every task succeeded); scripts in $JOB_DIR"
