#!/bin/bash
# job.sh NAME SEED STEPS [pretrain args...]: pre-train, then probe with both protocols (the paper's: last layer, mean
# pooling; the field's: each layer, mean and standard deviation, chosen on validation). PROTOCOLS=last skips the
# field's, which costs about five times the paper's.
NAME=$1; SEED=$2; HERE=$(dirname "$0"); SCREEN=${SCREEN:-$PWD/outputs/screening}
"$HERE/pretrain_one.sh" "$@"
"$HERE/probe_one.sh" "$SCREEN/runs/$NAME-seed$SEED/model" "$NAME-seed$SEED-last-mean"
[ "${PROTOCOLS:-both}" = last ] && exit 0
"$HERE/probe_one.sh" "$SCREEN/runs/$NAME-seed$SEED/model" "$NAME-seed$SEED-all-meanstd" --layers all --pooling meanstd
