#!/bin/bash
# hour.sh NAME [pretrain args...]: one recipe's full CPU-hour (the cpu-hour preset's 18,000 steps with overrides),
# seeds 0, 1 and 2 side by side (one thread each), checkpoints every 4,500 steps for the curve over the seeds:
#   python training/ablate.py --curve $SCREEN/runs/NAME-seed0,... --curve_steps 4500,9000,18000 --tasks ...
HERE=$(dirname "$0"); SCREEN=${SCREEN:-$PWD/outputs/screening}; NAME=$1; shift
for seed in 0 1 2; do
  "$HERE/pretrain_one.sh" "$NAME" "$seed" 18000 --checkpointing_steps 4500 --checkpoints_total_limit 0 "$@" &
done
wait
