#!/bin/bash
# pretrain_one.sh NAME SEED STEPS [pretrain args...]: one screening run, the cpu-hour preset with overrides, on the
# development benchmark's pre-training audio ($DEV, default ~/.cache/myna-hf/dev-benchmark) into $SCREEN/runs.
set -u
# `--wide` among the args: the wider pre-training set instead ($DEV_WIDE, built with --package_set wide).
NAME=$1; SEED=$2; STEPS=$3; shift 3
DEV=${DEV:-$HOME/.cache/myna-hf/dev-benchmark}; SCREEN=${SCREEN:-$PWD/outputs/screening}
DEV_WIDE=${DEV_WIDE:-$HOME/.cache/myna-hf/dev-benchmark-wide}
ARGS=(); for arg in "$@"; do [ "$arg" = --wide ] && ARGS+=(--data_dir "$DEV_WIDE/pretrain") || ARGS+=("$arg"); done
mkdir -p "$SCREEN/logs"
cd "$(dirname "$0")/../.."
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 5 python training/pretrain.py \
  --config training/configs/cpu-hour.yaml --dataset folder --data_dir "$DEV/pretrain" \
  --cache_dir "$SCREEN/cache" --output_dir "$SCREEN/runs/$NAME-seed$SEED" --overwrite_output_dir --seed "$SEED" \
  --max_steps "$STEPS" --checkpointing_steps $(( STEPS / 2 )) --checkpoints_total_limit 4 --logging_steps 100 \
  --warmup_steps $(( STEPS / 36 )) --preprocessing_num_workers 1 "${ARGS[@]}" > "$SCREEN/logs/$NAME-seed$SEED.log" 2>&1
echo "$NAME seed $SEED exit $?" >> "$SCREEN/logs/done.txt"
