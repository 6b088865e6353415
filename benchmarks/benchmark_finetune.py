"""Fine-tuning throughput of a full-size Myna-Base classifier: training examples (clips) per second, frozen and full.

Runs the training step of `training/finetune.py` (`MynaDataCollatorForAudioClassification` with a random 96-frame
crop per clip, `MynaForAudioClassification`, AdamW on the trainable parameters; a frozen encoder trains the head
only) on random 30 s clips held in memory, so it measures the step, not the audio decoding or the feature cache.
Also reports evaluation clips per second (every chunk of each clip, logits averaged per clip). On CUDA the forward
runs in bf16 autocast, as `--bf16` does with `Trainer`.

    python benchmarks/benchmark_finetune.py                      # CPU: batch 32, 3 timed steps per mode
    python benchmarks/benchmark_finetune.py --device cuda        # GPU: batch 256, bf16, 20 timed steps
"""

import argparse
import resource
import time

import numpy as np
import torch

from modeling_myna import MynaConfig, MynaDataCollatorForAudioClassification, MynaForAudioClassification


CHUNKS_PER_CLIP = 9  # a 30 s clip: 937 frames, nine 96-frame chunks


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch_size", type=int, default=None, help="clips per step (default: 256 CUDA, 32 CPU)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per mode (default: 20 CUDA, 3 CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 5 CUDA, 1 CPU)")
    parser.add_argument("--modes", default="frozen,full", help="comma-separated: frozen, full")
    parser.add_argument("--num_labels", type=int, default=10)
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (256 if cuda else 32)
    steps = args.steps or (20 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    rng = np.random.default_rng(0)
    config = MynaConfig.from_variant("base", num_labels=args.num_labels)  # ViT-S/16, 384 x 12
    clips = [
        {"input_values": rng.random((CHUNKS_PER_CLIP, 128, config.chunk_frames), dtype=np.float32) * 100,
         "label": int(rng.integers(args.num_labels))}
        for _ in range(batch_size)
    ]
    train_collator = MynaDataCollatorForAudioClassification(random_crop=True, chunk_frames=config.chunk_frames)
    eval_collator = MynaDataCollatorForAudioClassification()
    print(f"device {device} ({torch.cuda.get_device_name(device) if cuda else f'{torch.get_num_threads()} threads'}), "
          f"Myna-Base {sum(p.numel() for p in MynaForAudioClassification(config).parameters()) / 1e6:.1f}M, "
          f"batch {batch_size} clips, {'bf16 autocast' if cuda else 'fp32'}")

    for mode in args.modes.split(","):
        torch.manual_seed(0)
        model = MynaForAudioClassification(config).to(device).train()
        if mode == "frozen":
            model.myna.requires_grad_(False)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for step in range(warmup + steps):
            if step == warmup:
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in train_collator(clips).items()}
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        train_rate = steps * batch_size / (time.perf_counter() - start)

        model.eval()
        with torch.no_grad(), autocast:
            batch = {k: v.to(device) for k, v in eval_collator(clips).items()}
            model(**batch)  # warm-up
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(**{k: v.to(device) for k, v in eval_collator(clips).items()})
            if cuda:
                torch.cuda.synchronize(device)
        eval_rate = batch_size / (time.perf_counter() - start)
        print(f"{mode:>6}: train {train_rate:8.1f} clips/s (one 3 s crop each) | eval {eval_rate:8.1f} clips/s "
              f"({CHUNKS_PER_CLIP} chunks each) | peak memory {peak_memory_gb(device):.2f} GB")


if __name__ == "__main__":
    main()
