#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one go, for a CUDA machine, from the repository root:
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      # default: $OUT when set (the device tool), else gpu-results/
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/dry-run     # the same script, tiny, on a CPU (a dry run)
#   BUDGET=420 bash benchmarks/gpu_check.sh         # stop starting steps after 420 s (a short GPU lease)
#   WHEELS=.whl bash benchmarks/gpu_check.sh        # an offline machine: install the project from a folder of wheels
#   ONLY="gpu-tests frontend" bash benchmarks/gpu_check.sh      # only these steps (and the environment)
#
# Needs the project installed with its extras (`make install`, or `pip install -e ".[train,eval,dev]"` next to a CUDA
# build of torch). On a machine with torch but no registry, WHEELS names a folder of the missing wheels (nnAudio,
# soxr, soundfile, datasets, evaluate, ...): they and the project are installed under a scratch folder first, and
# pyarrow from that folder only where the machine's is older than datasets needs.
#
# Steps run in order of value (correctness first, then the paper's setting, then the rest). Each writes its output
# under RESULTS_DIR and the script goes on when one fails, so one run gives every figure that can be had; a step is
# not started once BUDGET seconds have passed, and none runs past the time left. The summary lists the steps that
# failed and those skipped for time. About 6 minutes on an H200.
set -u -o pipefail
RESULTS=${1:-${OUT:-gpu-results}}
mkdir -p "$RESULTS"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET=${BUDGET:-1800}
n() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }  # n FULL QUICK: a size for this run
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
failed=()
skipped=()
START=$(date +%s)

step() {  # step NAME COMMAND...: runs COMMAND, output to RESULTS/NAME.txt (and the console), within the budget
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ " $ONLY environment " != *" $name "* ]]; then return; fi
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then skipped+=("$name"); echo "=== $name: skipped (budget spent)"; return; fi
  echo "=== $name ($(($(date +%s) - START)) s in, ${left} s left): $*"
  if ! timeout "$left" "$@" 2>&1 | tee "$RESULTS/$name.txt"; then failed+=("$name"); fi
}

if [ -n "${WHEELS:-}" ]; then
  SITE=${SITE:-/tmp/myna-site}
  mkdir -p "$SITE"
  wheels=$(ls "$WHEELS"/*.whl | grep -v '/pyarrow-')
  if ! $PY -c 'import sys, pyarrow; sys.exit(int(pyarrow.__version__.split(".")[0]) < 24)' 2>/dev/null; then
    wheels="$wheels $(ls "$WHEELS"/pyarrow-*.whl 2>/dev/null)"
  fi
  # shellcheck disable=SC2086
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $wheels \
    && $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" . \
    || { echo "installing from $WHEELS failed"; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi

step environment bash -c "nvidia-smi || true; $PY -c 'import torch, transformers, accelerate, datasets; \
print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), \"transformers\", transformers.__version__, \
\"accelerate\", accelerate.__version__, \"datasets\", datasets.__version__)'"

# The tests that need a GPU (pinned out-of-core copies, bf16 pre-training, CUDA mel, CUDA embedding).
if [ "$DEVICE" = cuda ]; then step gpu-tests $PY -m pytest -q -p no:cacheprovider -m gpu tests; fi

# Pre-training throughput at the paper's setting: ViT-S, batch 4096, bf16, SogCLR.
# Ours (one tokenizer, hybrid, compiled), the out-of-core path, and a straightforward reference-style step.
PRETRAIN=($PY benchmarks/benchmark_pretrain.py --device "$DEVICE" --json)
if [ "$QUICK" = 1 ]; then PRETRAIN+=(--model_size small --batch_size 32 --clips 128 --warmup 1); fi
step pretrain-base "${PRETRAIN[@]}" --variant base --steps "$(n 100 2)"
step pretrain-reference "${PRETRAIN[@]}" --variant base --steps "$(n 10 2)" --reference
step pretrain-hybrid "${PRETRAIN[@]}" --variant hybrid --steps "$(n 100 2)"
step pretrain-base-out-of-core "${PRETRAIN[@]}" --variant base --steps "$(n 100 2)" --placement out_of_core \
  --clips "$(n 32768 128)"

# Embedding throughput and the mel front end on the GPU (audio-seconds per second, vs nnAudio).
step embed $PY benchmarks/benchmark_embed.py --device "$DEVICE" --variant hybrid --num_files "$(n 100 3)" \
  --seconds "$(n 30 5)" --long_minutes "$(n 10 0.2)" --batch_size "$(n 256 8)"
step frontend $PY benchmarks/benchmark_frontend.py --device "$DEVICE" --repeats "$(n 3 1)" --num_clips "$(n 32 4)" \
  --seconds "$(n 60 5)"

step pretrain-base-compiled "${PRETRAIN[@]}" --variant base --steps "$(n 100 2)" --compile

# Out-of-core at scale on the GPU: host memory flat as the store doubles, step time vs resident.
step out-of-core-scale $PY benchmarks/benchmark_out_of_core.py --device "$DEVICE" --model_size "$(n vit-s small)" \
  --batch_size "$(n 4096 32)" --steps "$(n 50 2)" --clips "$(n 50000 256)" --scale 1 2 --repeats 1

echo
echo "results in $RESULTS ($(($(date +%s) - START)) s)"
if [ ${#skipped[@]} -gt 0 ]; then echo "SKIPPED for time: ${skipped[*]}"; fi
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all steps passed"
