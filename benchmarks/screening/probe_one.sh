#!/bin/bash
# probe_one.sh MODEL OUT_NAME [probe args...]: the dev tasks' fast probe of one model (or handcrafted:X).
set -u
MODEL=$1; NAME=$2; shift 2
DEV=${DEV:-$HOME/.cache/myna-hf/dev-benchmark}; SCREEN=${SCREEN:-$PWD/outputs/screening}
T=$DEV/tasks; OUT=$SCREEN/probes/$NAME
[ -f "$OUT/results.json" ] && exit 0
mkdir -p "$SCREEN/logs"
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 python evaluation/probe.py --model "$MODEL" --fast --num_threads 1 \
  --no_tsne --tasks "custom:$T/dev-key.yaml,custom:$T/dev-composer.yaml,custom:$T/dev-instruments.yaml" \
  --output_dir "$OUT" "$@" > "$SCREEN/logs/probe-$NAME.log" 2>&1
echo "probe $NAME exit $?" >> "$SCREEN/logs/done.txt"
