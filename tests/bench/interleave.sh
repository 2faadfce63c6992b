#!/bin/bash
# Interleaved bench runs of several checkouts, for medians (docs/performance.md).
# Usage: tests/bench/interleave.sh PHASES TAG SIDE...   e.g. interleave.sh e2e,delivery E1 A N N A A N
# SIDE X runs the bench of the worktree /tmp/wtX (git worktree add /tmp/wtA <commit>); each run writes
# /tmp/qb/TAG-<i>-<X>.json. Extra bench flags in BENCH_ARGS. Then: tests/bench/interleave_summary.py TAG
phases=$1; tag=$2; shift 2
mkdir -p /tmp/qb
i=0
for side in "$@"; do
  i=$((i+1)); dir=/tmp/wt$side
  (cd "$dir" && PYTHONPATH=$dir timeout 900 "${PYTHON:-/work/main/.venv/bin/python}" -m gateway.cli bench \
    --phases "$phases" $BENCH_ARGS --json "/tmp/qb/$tag-$i-$side.json" > "/tmp/qb/$tag-$i-$side.log" 2>&1)
  echo "$side done rc=$?"
done
