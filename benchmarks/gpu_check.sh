#!/usr/bin/env bash
# Every GPU check and benchmark of the project in one go, for a CUDA machine, from the repository root:
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]      # default: $OUT when set (the device tool), else gpu-results/
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh /tmp/dry-run     # the same script, tiny, on a CPU (a dry run)
#
# Needs the project installed with its extras (`make install`, or `pip install -e ".[train,eval,dev]"` next to a CUDA
# build of torch). Each step writes its output under RESULTS_DIR and the script goes on when one fails, so one run
# gives every figure that can be had; the summary at the end lists the steps that failed. About 6 minutes on an H100.
set -u -o pipefail
RESULTS=${1:-${OUT:-gpu-results}}
mkdir -p "$RESULTS"
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
n() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; }  # n FULL QUICK: a size for this run
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
failed=()

step() {  # step NAME COMMAND...: runs COMMAND, output to RESULTS/NAME.txt (and the console)
  local name=$1; shift
  echo "=== $name: $*"
  if ! timeout 900 "$@" 2>&1 | tee "$RESULTS/$name.txt"; then failed+=("$name"); fi
}

step environment bash -c "nvidia-smi || true; $PY -c 'import torch; print(torch.__version__, torch.cuda.is_available())'"

# The tests that need a GPU (pinned out-of-core copies, bf16 pre-training, CUDA embedding), then the fast suite.
if [ "$DEVICE" = cuda ]; then step gpu-tests $PY -m pytest -q -m gpu tests; fi

# Pre-training throughput at the paper's setting: ViT-S, batch 4096, bf16, SogCLR, a few hundred steps.
# Ours (one tokenizer, hybrid, compiled), the out-of-core path, and a straightforward reference-style step.
PRETRAIN=($PY benchmarks/benchmark_pretrain.py --device "$DEVICE" --json)
if [ "$QUICK" = 1 ]; then PRETRAIN+=(--model_size small --batch_size 32 --clips 128 --warmup 1); fi
step pretrain-base "${PRETRAIN[@]}" --variant base --steps "$(n 300 2)"
step pretrain-hybrid "${PRETRAIN[@]}" --variant hybrid --steps "$(n 200 2)"
step pretrain-base-compiled "${PRETRAIN[@]}" --variant base --steps "$(n 300 2)" --compile
step pretrain-base-out-of-core "${PRETRAIN[@]}" --variant base --steps "$(n 300 2)" --placement out_of_core \
  --clips "$(n 65536 128)"
step pretrain-reference "${PRETRAIN[@]}" --variant base --steps "$(n 30 2)" --reference

# Out-of-core at scale on the GPU: host memory flat from 100k to 200k clips, step time vs resident.
step out-of-core-scale $PY benchmarks/benchmark_out_of_core.py --device "$DEVICE" --model_size "$(n vit-s small)" \
  --batch_size "$(n 4096 32)" --steps "$(n 100 2)" --clips "$(n 100000 256)" --scale 1 2 --repeats 1

# The mel front end on the GPU and the CPU (audio-seconds per second, vs nnAudio).
if [ -f benchmarks/benchmark_frontend.py ]; then
  step frontend $PY benchmarks/benchmark_frontend.py --device "$DEVICE" --repeats "$(n 5 1)" --num_clips "$(n 64 4)" \
    --seconds "$(n 60 5)"
fi

# Embedding throughput on the GPU.
if [ -f benchmarks/benchmark_embed_track.py ]; then
  step embed-track $PY benchmarks/benchmark_embed_track.py --device "$DEVICE" --dtype bfloat16 \
    --seconds "$(n 180 10)" --repeats "$(n 5 1)"
fi

echo
echo "results in $RESULTS"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all steps passed"
