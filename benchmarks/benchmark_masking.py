"""Cost of the masking policies in pre-training, and pre-training throughput per model size, on CPU.

One process, one model, one fixed batch of random power spectrograms: each round times `--steps` training steps
(policy noise, masked forward of two views, InfoNCE, backward, Adam) per policy, in turn, so that on a busy machine
every policy sees the same load; the report gives each policy's median examples/s, the median over rounds of its
ratio to `uniform` in the same round, and the share of the step spent drawing the masks (the policy's own cost,
which the load of the machine disturbs least). `--sizes` times the uniform step per model size the same way.

    python benchmarks/benchmark_masking.py                              # policies, small model, batch 64
    python benchmarks/benchmark_masking.py --model_size vit-s --batch_size 32
    python benchmarks/benchmark_masking.py --sizes small,vit-t,vit-s,vit-b --batch_size 16 --policies uniform
"""

import argparse
import statistics
import time

import torch

from modeling_myna import MynaConfig, MynaForContrastivePretraining
from modeling_myna.configuration_myna import MASKING_POLICIES
from modeling_myna.masking import build_masking_policy
from modeling_myna.modeling_myna import num_kept_tokens
from myna_training.losses import InfoNCELoss


def make_step(model_size: str, batch_size: int, variant: str = "base"):
    torch.manual_seed(0)
    config = MynaConfig.from_variant(variant, model_size=model_size)
    model = MynaForContrastivePretraining(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = InfoNCELoss()
    views = tuple(torch.rand((batch_size, 128, config.chunk_frames)) ** 4 * 1e6 for _ in range(2))
    grids = [(128 // p[0], config.chunk_frames // p[1]) for p in config.patch_sizes]

    def step(policy, micro: int) -> float:
        """One training step; returns the seconds spent drawing the masks."""
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(micro)
        noise = [
            policy(grid, num_kept_tokens(grid[0] * grid[1], config.mask_ratio), batch_size, generator=generator,
                   views=views, patch_size=p)
            for grid, p in zip(grids, config.patch_sizes)
        ]
        noise_seconds = time.perf_counter() - start
        loss = model(views=list(views), noise=noise, loss_fn=loss_fn).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return noise_seconds

    return step


def interleaved(steps: dict, rounds: int, per_round: int, batch_size: int) -> tuple[dict, dict]:
    """`({name: [examples/s per round]}, {name: [mask-drawing share of the step time per round]})`."""
    rates = {name: [] for name in steps}
    shares = {name: [] for name in steps}
    micro = 0
    for name, step in steps.items():  # warm-up, untimed
        step(micro)
    for _ in range(rounds):
        for name, step in steps.items():
            start, noise_seconds = time.perf_counter(), 0.0
            for _ in range(per_round):
                micro += 1
                noise_seconds += step(micro) or 0.0
            seconds = time.perf_counter() - start
            rates[name].append(per_round * batch_size / seconds)
            shares[name].append(noise_seconds / seconds)
    return rates, shares


def report(rates: dict, shares: dict, reference: str) -> None:
    print(f"{'':<16}{'examples/s (median)':>20}{'ratio to ' + reference + ' (median of rounds)':>36}"
          f"{'masks: share of step':>22}")
    for name, values in rates.items():
        ratios = [v / r for v, r in zip(values, rates[reference])]
        print(f"{name:<16}{statistics.median(values):>20.1f}{statistics.median(ratios):>36.3f}"
              f"{statistics.median(shares[name]):>22.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policies", default=",".join(MASKING_POLICIES))
    parser.add_argument("--model_size", default="small")
    parser.add_argument("--sizes", default=None, help="comma list of model sizes: time uniform per size instead")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per policy per round")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"CPU, {threads} threads, batch {args.batch_size}, {args.rounds} rounds x {args.steps} steps")
    if args.sizes:
        sizes = [s.strip() for s in args.sizes.split(",")]
        uniform = build_masking_policy("uniform")
        steps = {}
        for size in sizes:
            step = make_step(size, args.batch_size)
            steps[size] = lambda micro, step=step: step(uniform, micro)
        report(*interleaved(steps, args.rounds, args.steps, args.batch_size), sizes[0])
        return
    step = make_step(args.model_size, args.batch_size)
    names = [p.strip() for p in args.policies.split(",")]
    policies = {name: build_masking_policy(name) for name in names}
    steps = {name: (lambda micro, policy=policy: step(policy, micro)) for name, policy in policies.items()}
    print(f"model {args.model_size}, variant base")
    report(*interleaved(steps, args.rounds, args.steps, args.batch_size), names[0])


if __name__ == "__main__":
    main()
