"""Training memory of Myna per model size, ESTIMATED ON PAPER (no GPU measured it): bfloat16 autocast, batch 4096,
90% masking, with and without gradient checkpointing.

Counts, per model size (parameters from the model built on the `meta` device, no memory used):
- weights, gradients and Adam's two moments, float32 under autocast: 16 bytes per parameter;
- activations kept for the backward pass, per kept token and block (residual stream float32, autocast casts each
  Linear's input to bfloat16; fused attention keeps q, k, v, its output and a log-sum-exp, no N^2 matrix):
  LayerNorm inputs 2 x 4h, Linear inputs in bf16 (qkv 2h, o_proj 2i, fc1 2h, fc2 2m), q/k/v 3 x 2i, attention output
  2i, GELU input 2m: `12 h + 10 i + 4 m` bytes (h width, i = heads x head_dim, m MLP width; 38 h for the ViTs).
  This is the count of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models",
  34 s b h per layer in fp16 with dropout) adapted to no dropout, a float32 residual stream and fused attention;
- with gradient checkpointing (`model.gradient_checkpointing_enable()`, one checkpoint per block): each block keeps
  its float32 input (4 h per token), plus one block's activations recomputed during the backward pass;
- the tokenizer on the kept patches (patch LayerNorm input float32 and bf16 Linear input, 6 bytes per patch value;
  its output LayerNorm 4 h) and the input crops (two float32 views of 128 x 96);
- the loss: InfoNCE on 2B x 2B float32 similarities, about three such matrices alive (logits, softmax, gradient).
Kept tokens: 2 views x (48 - int(0.9 x 48)) = 10 per example. Allocator overhead, CUDA context (~0.5 GiB) and
fragmentation are not counted: read the figures as lower bounds, within perhaps 20-30%.

    python benchmarks/estimate_memory.py                          # batch 4096, 90% masking, square patches
    python benchmarks/estimate_memory.py --batch_size 1024 --mask_ratio 0.75 --variant hybrid
"""

import argparse

import torch

from modeling_myna import MynaConfig, MynaForContrastivePretraining
from modeling_myna.configuration_myna import MODEL_SIZES
from modeling_myna.modeling_myna import num_kept_tokens


def estimate(model_size: str, batch_size: int, mask_ratio: float, variant: str = "base") -> dict:
    config = MynaConfig.from_variant(variant, model_size=model_size, mask_ratio=mask_ratio)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in MynaForContrastivePretraining(config).parameters())
    h, i, m = config.hidden_size, config.num_attention_heads * config.head_dim, config.intermediate_size
    layers, views = config.num_hidden_layers, 2
    per_token_layer = 12 * h + 10 * i + 4 * m
    tokens, embed, inputs = 0, 0, 0
    for patch in config.patch_sizes:
        n = (config.num_mel_bins // patch[0]) * (config.chunk_frames // patch[1])
        kept = views * batch_size * num_kept_tokens(n, mask_ratio)
        tokens += kept
        embed += kept * (6 * patch[0] * patch[1] + 4 * h)
    inputs = views * batch_size * config.num_mel_bins * config.chunk_frames * 4
    num_views = views * len(config.patch_sizes)
    loss = 3 * (num_views // len(config.patch_sizes) * batch_size) ** 2 * 4
    state = 16 * parameters
    full = tokens * layers * per_token_layer
    checkpointed = tokens * layers * 4 * h + tokens * per_token_layer
    common = state + embed + inputs + loss
    gib = 2**30
    return {
        "size": model_size, "params_m": parameters / 1e6, "kept_tokens": tokens, "state_gib": state / gib,
        "activations_gib": full / gib, "activations_ckpt_gib": checkpointed / gib,
        "total_gib": (common + full) / gib, "total_ckpt_gib": (common + checkpointed) / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--mask_ratio", type=float, default=0.9)
    parser.add_argument("--variant", default="base")
    parser.add_argument("--sizes", default="vit-t,vit-s,vit-b,vit-l")
    args = parser.parse_args()
    print(f"ESTIMATE (paper arithmetic, not measured): bf16 autocast, Adam, batch {args.batch_size}, "
          f"{args.mask_ratio:.0%} masking, variant {args.variant}")
    header = ("size", "params (M)", "kept tokens", "weights+grads+Adam", "activations", "activations (ckpt)",
              "total", "total (ckpt)")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for size in args.sizes.split(","):
        r = estimate(size.strip(), args.batch_size, args.mask_ratio, args.variant)
        print(f"| {r['size']} | {r['params_m']:.1f} | {r['kept_tokens']:,} | {r['state_gib']:.2f} GiB | "
              f"{r['activations_gib']:.2f} GiB | {r['activations_ckpt_gib']:.2f} GiB | {r['total_gib']:.1f} GiB | "
              f"{r['total_ckpt_gib']:.1f} GiB |")


if __name__ == "__main__":
    main()
