"""The summary a pre-training run prints when it ends: the model, the masking, the device, the data, this session's
training against the run's, the loss, the closing probe's table, and where the model is with what to run next.

`format_summary` reads the `summary` dict that `pretrain.main` returns (the ablation runner records part of it), so
that what is printed and what is returned are the same numbers.
"""

import os

from myna_training.run_folder import CACHE_DIR, CHECKPOINTS_DIR, LOGS_DIR


def describe_masking(config) -> str:
    """`"uniform, 90% of the tokens dropped (constant)"`; a schedule gives its start and end."""
    options = ", ".join(f"{k}={v}" for k, v in sorted((config.masking_policy_kwargs or {}).items()))
    policy = config.masking_policy + (f" ({options})" if options else "")
    if config.mask_ratio_schedule == "constant" or config.mask_ratio_start is None:
        return f"{policy}, {config.mask_ratio:.0%} of the tokens dropped (constant ratio)"
    return (
        f"{policy}, ratio {config.mask_ratio_start:.0%} -> {config.mask_ratio:.0%} of the tokens dropped "
        f"({config.mask_ratio_schedule} schedule)"
    )


def format_summary(summary: dict, config, probe_clips: int) -> str:
    lines = [
        "",
        "=== Myna pre-training summary ===",
        f"model: {config.num_hidden_layers} layers x {config.hidden_size}, patches {config.patch_sizes}",
        f"masking: {describe_masking(config)}",
        f"device: {summary['device']}; precision {summary['precision']}",
        f"data: {summary['num_clips'] if summary['num_clips'] is not None else 'streamed'} clips; "
        f"{summary['skipped_detail']}",
    ]
    rate = summary["session_examples"] / max(summary["train_seconds"], 1e-9)
    session = (
        f"{summary['session_steps']} steps, {summary['session_examples']} examples in {summary['train_seconds']:.1f} s "
        f"({rate:.0f} examples/s, {summary['session_cpu_seconds']:.1f} CPU-s)"
    )
    if summary["resumed_at_step"] is None:
        lines.append(f"training: {session}")
    else:
        lines.append(
            f"training: resumed at step {summary['resumed_at_step']}; this session {session}; run total "
            f"{summary['steps']} steps, {summary['examples_seen']} examples"
            + (" (it had already reached max_steps: nothing left to train)" if not summary["session_steps"] else "")
        )
    if summary["first_loss"] is not None:
        # libauc's GCLoss_v1 surrogate: cosine terms not divided by T, summed over both views.
        note = " (SogCLR surrogate: its gradient is the global contrastive loss's, its value is not and may go below 0)"
        first = (
            "first step" if summary["resumed_at_step"] is None
            else f"first micro-batch after resuming at step {summary['resumed_at_step']}"
        )
        lines.append(
            f"loss: {summary['first_loss']:.3f} ({first}) -> {summary['last_loss']:.3f} (last 10 micro-batches)"
            + (note if summary["loss_name"] == "sogclr" else "")
        )
    if "probe" in summary:
        lines.append(f"linear probe, 5-fold accuracy on {probe_clips} held-out generated clips (mean chunk embedding):")
        lines.append(f"  {'task':<8}{'random init':>14}{'pre-trained':>14}")
        for task, scores in summary["probe"].items():
            lines.append(f"  {task:<8}{scores['random init']:>14.3f}{scores['pre-trained']:>14.3f}")
    folders = [f"{n}/" for n in (CHECKPOINTS_DIR, LOGS_DIR, CACHE_DIR)
               if os.path.isdir(os.path.join(summary["output_dir"], n))]
    lines.append(f"run {summary['run_id']} in {summary['output_dir']} ({', '.join(folders + ['run.json'])})")
    lines.append(f"model saved to {summary['model_dir']} (AutoModel.from_pretrained loads it), e.g.")
    lines.append(f"  myna embed song.flac --model {summary['model_dir']} --output embeddings.npz")
    lines.append(f"  python evaluation/probe.py --model {summary['model_dir']} --fast --output_dir outputs/eval")
    if "hub_url" in summary:
        lines.append(f"pushed to {summary['hub_url']}")
    return "\n".join(lines)



__all__ = ["describe_masking", "format_summary"]
