#!/bin/bash
# hour.sh NAME STEPS [pretrain args...]: one recipe's CPU-hour (the cpu-hour preset with overrides, STEPS steps: the
# preset's 18,000 fill an hour on a quiet core; three runs on two cores cost about 1.5x the CPU per step, so 12,000),
# seeds 0, 1 and 2 side by side (one thread each), a checkpoint every quarter for the curve over the seeds:
#   python training/ablate.py --curve $SCREEN/runs/NAME-seed0,... --tasks ...
HERE=$(dirname "$0"); NAME=$1; STEPS=$2; shift 2
for seed in 0 1 2; do
  "$HERE/pretrain_one.sh" "$NAME" "$seed" "$STEPS" --checkpointing_steps $(( STEPS / 4 )) --checkpoints_total_limit 0 \
    "$@" &
done
wait
