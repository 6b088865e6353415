"""Pre-training throughput of Myna: training examples per second, memory and, on a GPU, model FLOPs utilisation.

Runs the hot loop of `training/pretrain.py` on a generated spectrogram store (random power spectrograms, 10 s clips):
the batch plan, crops from a resident bank or out-of-core (read from the store file by a background thread into
pinned memory), per-step mask noise, the model with 90% token masking, the contrastive loss and Adam. It measures the
step and the reading of crops, not the audio preprocessing (see benchmark_frontend.py).

`--reference` runs instead a straightforward implementation of the reference training step (ghost-signal/myna
utils.py `masked_model_output` + `mask_inputs`): every patch embedded, a per-example `randperm` loop for the mask,
float32, manual attention (tests/reference_vit.py), the crops taken from the same resident bank.

    python benchmarks/benchmark_pretrain.py                                  # CPU: ViT-S, batch 256
    python benchmarks/benchmark_pretrain.py --device cuda                    # GPU: ViT-S, batch 4096, bf16
    python benchmarks/benchmark_pretrain.py --device cuda --reference        # the reference-style step, fp32
    python benchmarks/benchmark_pretrain.py --placement out_of_core --store /data/store   # an existing store
    python benchmarks/benchmark_pretrain.py --json                           # one JSON line (for other scripts)
    python benchmarks/benchmark_pretrain.py --masking_policy saliency --model_size vit-t   # a policy, a size
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import torch

from modeling_myna import MynaConfig, MynaForContrastivePretraining
from modeling_myna.configuration_myna import MASKING_POLICIES, MODEL_SIZES
from modeling_myna.masking import build_masking_policy
from modeling_myna.modeling_myna import num_kept_tokens
from myna_training.data import BatchPlan, CropPrefetcher, SpectrogramStore
from myna_training.losses import InfoNCELoss, SogCLRLoss
from myna_training.pretrain import num_tokens


# Dense bf16 peak of common GPUs (TFLOP/s, vendor data sheets, no sparsity) for MFU.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}
SIZES = MODEL_SIZES


def training_flops_per_example(config: MynaConfig, num_views: int = 2, embed_all: bool = False) -> float:
    """Matmul FLOPs of one training example (all views, every tokenizer, forward + backward = 3x forward).

    Per view and tokenizer: the patch projection on the K kept tokens (on all N with `embed_all`, as the reference
    does), each block on the K kept tokens (qkv, attention scores and values, output, MLP), and the projection head.
    About 1.27 GFLOP for single-tokenizer ViT-S.
    """
    d, h, layers = config.hidden_size, config.num_attention_heads * config.head_dim, config.num_hidden_layers
    total = 0.0
    for patch_height, patch_width in config.patch_sizes:
        n = num_tokens(config, [patch_height, patch_width])
        k = num_kept_tokens(n, config.mask_ratio)
        embed = 2 * (n if embed_all else k) * patch_height * patch_width * d
        block = 2 * k * (3 * d * h + h * d + 2 * d * config.intermediate_size) + 2 * 2 * k * k * h
        hidden = config.projection_hidden_size
        head = 2 * (d * hidden + hidden * config.projection_dim) if hidden else 2 * d * config.projection_dim
        total += num_views * (embed + layers * block + head)
    return 3 * total


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for key, v in PEAK_BF16_TFLOPS.items() if key in name), None)


def generate_store(directory: str, num_clips: int, frames: int, num_mel_bins: int = 128, seed: int = 0):
    """A store of `num_clips` random bfloat16 power spectrograms of `frames` frames, written 1024 clips at a time."""
    generator = torch.Generator().manual_seed(seed)

    def arrays():
        for start in range(0, num_clips, 1024):
            count = min(1024, num_clips - start)
            block = (torch.rand(count * frames, num_mel_bins, generator=generator) ** 4 * 1e6).to(torch.bfloat16)
            yield block.view(torch.int16).numpy().view(np.uint16)

    return SpectrogramStore.write_arrays(directory, arrays(), np.full(num_clips, frames), "bfloat16", num_mel_bins)


def memory_status() -> dict:
    """Current resident memory of this process, split into anonymous (its own) and file-backed (page cache) pages."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    kib = {k: int(fields[k].split()[0]) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM") if k in fields}
    return {k: v / 2**20 for k, v in kib.items()}  # GiB


def reference_style_model(config: MynaConfig, device):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    from reference_vit import ReferenceMyna, posemb_2d

    patch = config.patch_sizes[0]
    model = ReferenceMyna(
        patch, dim=config.hidden_size, depth=config.num_hidden_layers, heads=config.num_attention_heads,
        dim_head=config.head_dim, mlp_dim=config.intermediate_size, num_outputs=config.projection_dim,
    ).to(device)
    grid = (config.num_mel_bins // patch[0], config.chunk_frames // patch[1])
    positions = posemb_2d(*grid, config.hidden_size).to(device)

    def project(spec: torch.Tensor) -> torch.Tensor:
        """The reference's `masked_model_output`: embed all patches, per-example randperm mask, encode, pool."""
        x = model.to_patch_embedding(spec[:, None]) + positions
        batch, n, _ = x.shape
        masked = int(config.mask_ratio * n)
        keep = torch.stack([torch.randperm(n) for _ in range(batch)])[:, masked:].to(device)
        x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        return model.linear_head(model.transformer(x).mean(dim=1))

    return model, project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=None, help="default: 4096 on CUDA, 256 on CPU")
    parser.add_argument("--variant", default="base", choices=["base", "vertical", "hybrid"])
    parser.add_argument("--model_size", default="vit-s", choices=list(SIZES))
    parser.add_argument("--masking_policy", default="uniform", choices=list(MASKING_POLICIES))
    parser.add_argument("--loss", default="sogclr", choices=["sogclr", "infonce"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 100 on CUDA, 5 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 CUDA, 1 CPU)")
    parser.add_argument("--placement", default="resident", choices=["resident", "out_of_core"])
    parser.add_argument("--store", default=None, help="an existing spectrogram store (default: generate one)")
    parser.add_argument("--clips", type=int, default=None, help="generated clips (default 16384 CUDA, 1024 CPU)")
    parser.add_argument("--clip_frames", type=int, default=313, help="frames per generated clip (10 s)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    parser.add_argument("--reference", action="store_true", help="the reference-style step (fp32, randperm loop)")
    parser.add_argument("--json", action="store_true", help="print one JSON line of results")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (4096 if cuda else 256)
    steps = args.steps or (100 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    bf16 = cuda and not args.fp32 and not args.reference
    torch.manual_seed(0)
    config = MynaConfig.from_variant(args.variant, **SIZES[args.model_size])

    with tempfile.TemporaryDirectory() as scratch:
        if args.store:
            store = SpectrogramStore(args.store)
        else:
            clips = max(args.clips or (16384 if cuda else 1024), batch_size)
            store = generate_store(os.path.join(scratch, "store"), clips, args.clip_frames)
        bank = store.bank(device, resident=args.placement == "resident")
        plan = BatchPlan(store.num_frames, batch_size, config.chunk_frames, seed=0)
        prefetcher = None
        if args.placement == "out_of_core":
            prefetcher = CropPrefetcher(bank, plan, slice(0, batch_size), device)
        loss_fn = (
            SogCLRLoss(len(store), num_tokenizers=len(config.patch_sizes)) if args.loss == "sogclr" else InfoNCELoss()
        ).to(device)
        if args.reference:
            model, project = reference_style_model(config, device)
        else:
            model = MynaForContrastivePretraining(config).to(device).train()
            if args.compile:
                model = torch.compile(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-5, fused=cuda)
        policy = build_masking_policy(args.masking_policy)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

        def step(micro: int) -> torch.Tensor:
            if prefetcher is not None:
                view1, view2, index = prefetcher.next()
            else:
                index, first, second = plan(micro)
                offsets = bank.host_offsets[index]
                view1, view2 = bank.crops(offsets + first, config.chunk_frames), bank.crops(offsets + second, config.chunk_frames)
            if args.reference:
                z1, z2 = project(view1.float()), project(view2.float())
                loss = loss_fn(z1, z2, index=index)
            else:
                generator = torch.Generator(device=device).manual_seed(micro)
                noise = [
                    policy(
                        (config.num_mel_bins // p[0], config.chunk_frames // p[1]),
                        num_kept_tokens(num_tokens(config, p), config.mask_ratio), batch_size,
                        generator=generator, device=device, views=(view1, view2), patch_size=p,
                    )
                    for p in config.patch_sizes
                ]
                with autocast:
                    loss = model(views=[view1, view2], noise=noise, loss_fn=loss_fn, index=index).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        for i in range(warmup):
            step(i)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for i in range(steps):
            loss = step(warmup + i)
        loss.item()  # waits for the device
        seconds = time.perf_counter() - start
        memory = memory_status()
        if prefetcher is not None:
            prefetcher.close()

    rate = steps * batch_size / seconds
    flops = training_flops_per_example(config, embed_all=args.reference)
    peak = peak_tflops(device)
    results = {
        "device": torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads",
        "implementation": "reference-style" if args.reference else "myna" + (" (compiled)" if args.compile else ""),
        "variant": args.variant,
        "model_size": args.model_size,
        "masking_policy": args.masking_policy,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "loss": args.loss,
        "batch_size": batch_size,
        "precision": "bf16 autocast" if bf16 else "float32",
        "placement": args.placement,
        "store_clips": len(store),
        "store_gib": round(store.nbytes / 2**30, 3),
        "steps": steps,
        "ms_per_step": round(seconds / steps * 1e3, 2),
        "examples_per_second": round(rate, 1),
        "gflop_per_example": round(flops / 1e9, 3),
        "tflops": round(rate * flops / 1e12, 3),
        "mfu": round(rate * flops / 1e12 / peak, 4) if peak else None,
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "rss_anon_gib": round(memory.get("RssAnon", float("nan")), 3),
        "rss_file_gib": round(memory.get("RssFile", float("nan")), 3),
    }
    if args.json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
