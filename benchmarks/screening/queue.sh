#!/bin/bash
# queue.sh [JOBS]: the hand-crafted baselines, then every line of JOBS (default jobs.txt: NAME SEED STEPS ARGS...),
# two at a time. Steps per line are set for about 10 CPU-minutes each from a measured 0.21 CPU-s per preset step.
# Each line names its input_scale and projection_hidden_size: the preset changed from power to log after round two,
# took the MLP head after round three and the statistics loss after round six, so each line names its
# statistics_loss_weight too: a line that did not name them would replay differently.
HERE=$(cd "$(dirname "$0")" && pwd)
export SCREEN=${SCREEN:-$PWD/outputs/screening} DEV=${DEV:-$HOME/.cache/myna-hf/dev-benchmark}
( "$HERE/probe_one.sh" handcrafted:logmel base-logmel-meanstd --pooling meanstd
  "$HERE/probe_one.sh" handcrafted:all base-all-meanstd --pooling meanstd ) &
xargs -P2 -L1 "$HERE/job.sh" < "${1:-$HERE/jobs.txt}"
wait
python "$HERE/summarise.py" > "$SCREEN/screening.md"
