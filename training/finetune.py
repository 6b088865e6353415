"""Fine-tuning Myna for audio classification, tagging or regression with transformers' `Trainer`.

    python training/finetune.py --model_name_or_path outputs/myna-pretrain/model --task synthetic-style
    python training/finetune.py --model_name_or_path myna-base --task gtzan --task_path /data/gtzan \\
        --finetuning_mode layerwise --layer_decay 0.75 --bf16
    python training/finetune.py --model_name_or_path myna-hybrid --patch_mode vertical \\
        --dataset_name audiofolder --data_dir music_by_genre/        # or a Hub id, or --train_file data.csv
    accelerate launch training/finetune.py --config finetune.yaml    # torchrun works as well

The recipe of the Hugging Face audio course ("fine-tuning a model for music classification"), for Myna: a `datasets`
audio dataset (a Hub id, `audiofolder`, CSV/JSON with audio paths, or a task of `myna_evaluation.tasks`, generated
ones included) decoded without FFmpeg (`Audio(decode=False)` and `modeling_myna.audio_utils.load_audio`); the
feature extractor's chunks computed once with `.map` (cached) or on the fly; `AutoModelForAudioClassification` with
`num_labels`, `label2id`, `id2label`; `Trainer` with `compute_metrics` from the local `evaluate` modules, early
stopping and the best validation checkpoint kept. Training takes one random 96-frame crop per clip per epoch;
evaluation and prediction average the outputs of all of a clip's chunks, as the Myna paper's probes do
(arXiv 2502.12511). The saved folder is a `MynaForAudioClassification` with its feature extractor and a model card
that carries the data, the settings and the validation and test metrics; `pipeline("audio-classification")` loads it.
"""

import os

import numpy as np
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    EarlyStoppingCallback,
    TrainerState,
    set_seed,
)
from transformers.utils import logging as transformers_logging

import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
from modeling_myna import MynaDataCollatorForAudioClassification, MynaFeatureExtractor
from modeling_myna.model_card import write_model_card
from myna_common.atomic import write_json
from myna_evaluation.scoring import compute_metrics
from myna_evaluation.tasks import TaskSpec
from myna_training.finetune_arguments import parse_finetune_arguments
from myna_training.finetune_data import load_finetuning_data, prepare_features
from myna_training.finetune_run import (
    EtaCallback,
    RunIdentityCallback,
    check_new_finetune,
    clear_finetune,
    describe_end,
    ended_training,
    finetune_identity_settings,
    finished_results,
    resolve_finetune_checkpoint,
    use_log_lines,
)
from myna_training.run_folder import read_identity, run_identity, write_identity
from myna_common.cli_support import check_model_name
from myna_common.progress import quiet_library_bars
from myna_training.hub import push_folder_to_hub
from myna_training.spectrograms import cache_key
from myna_training.trainer import MynaTrainer, freeze_encoder, freeze_unused_tokenizers

# The names this module has always offered (the data half lives in `finetune_data`).
from myna_training.finetune_data import (  # noqa: F401, E402
    DEFAULT_METRICS,
    PRIMARY_KEYS,
    PROBLEM_TYPES,
    audiofolder,
    load_custom_data,
    make_chunk_function,
)


# ---------------------------------------------------------------------------------------------------------------
# Metrics, model card, upload


def make_compute_metrics(spec: TaskSpec):
    """`compute_metrics` for `Trainer`: per-clip outputs (chunk logits averaged) through the task's `evaluate`
    module."""

    def compute(eval_prediction) -> dict[str, float]:
        outputs = eval_prediction.predictions
        outputs = outputs[0] if isinstance(outputs, tuple) else outputs
        targets = np.asarray(eval_prediction.label_ids)
        metrics = compute_metrics(spec, np.asarray(outputs, dtype=np.float64), targets)
        return {k: float(v) for k, v in metrics.items()}

    return compute


def evaluation_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per split (validation, test), one column per metric."""
    skip = {"loss", "runtime", "samples_per_second", "steps_per_second", "num_tags_skipped"}
    keys = {k[len(split) + 1 :] for split, metrics in results.items() for k in metrics if k.startswith(f"{split}_")}
    keys = sorted(keys - skip)
    lines = ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for split, metrics in results.items():
        cells = [f"{metrics.get(f'{split}_{k}', float('nan')):.4f}" for k in keys]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_finetune_arguments(argv)
    if model_args.model_name_or_path is None:
        raise ValueError(
            "pass --model_name_or_path: a Myna folder (outputs/myna-pretrain/model from `make demo`, a converted "
            "release from modeling_myna.convert_original_checkpoint) or a Hub id."
        )
    # A folder, or a Hub id that is cached or reachable: said at once, with the conversion command for released names.
    check_model_name(model_args.model_name_or_path, option="--model_name_or_path")
    if model_args.finetuning_mode not in ("frozen", "full", "layerwise"):
        raise ValueError(f"finetuning_mode={model_args.finetuning_mode!r}: choose frozen, full or layerwise.")
    quiet_library_bars()  # in a log: no loading or .map bars (Trainer's own bar: --disable_tqdm, set likewise)
    if training_args.device.type != "cuda":
        training_args.dataloader_pin_memory = False  # pinning needs an accelerator (torch warns on every loader)
    if training_args.fp16 and training_args.device.type == "cpu":
        raise ValueError("--fp16 cannot be used on a CPU (it would train in float32): use --bf16 there, or neither.")
    # The upload happens once, at the end, with the Myna model card; Trainer's own would push every checkpoint.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    output_dir = training_args.output_dir
    resume = training_args.resume_from_checkpoint
    if resume and training_args.overwrite_output_dir:
        raise ValueError("--resume_from_checkpoint continues a run and --overwrite_output_dir replaces it: pick one.")
    # Before any work: a folder that holds another run (or music) refuses at once.
    folder_state = None if resume else check_new_finetune(output_dir, training_args.overwrite_output_dir)
    set_seed(training_args.seed)

    # Data: audio and labels, then the feature extractor's chunks (the main process computes, the others read).
    with training_args.main_process_first(desc="loading the data"):
        spec, splits = load_finetuning_data(data_args, training_args.seed)
    label_names = list(spec.label_names)

    # The run's identity (model, settings, seed, data): a resume continues only the same run; a new one starts clean.
    data_hash = cache_key({s: getattr(d, "_fingerprint", None) for s, d in splits.items()}, spec.to_dict())
    identity = run_identity(finetune_identity_settings(model_args, data_args, training_args), data_hash)
    checkpoint = resolve_finetune_checkpoint(resume, output_dir, identity) if resume else None
    # A finished run (its results written last) has nothing to train; a checkpoint whose training had ended (killed
    # during the closing evaluation) gets its closing without training: Trainer would train on from it.
    finished, ended = (finished_results(output_dir), ended_training(checkpoint)) if resume else (None, None)
    if finished is not None:
        if training_args.should_log:
            print(f"run {identity['run_id']} in {output_dir} has finished ({finished.get('epochs') or 0:g} epochs, "
                  "results.json written): nothing to train. To train its model further, fine-tune it in another "
                  f"--output_dir with --model_name_or_path {output_dir}.")
        return finished
    if training_args.should_save:
        if folder_state == "replace":
            removed = clear_finetune(output_dir)
            if removed:
                print(f"--overwrite_output_dir: removed {', '.join(removed)} of the previous run in {output_dir}.")
        if read_identity(output_dir) is None:
            write_identity(output_dir, identity)

    config_kwargs = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: i for i, name in enumerate(label_names)},
        "problem_type": spec.problem_type,
        "classifier_hidden_size": model_args.classifier_hidden_size,
        "classifier_dropout": model_args.classifier_dropout,
    }
    if model_args.patch_mode is not None:
        config_kwargs["default_patch_mode"] = model_args.patch_mode
    closing_from = None  # training that had ended closes on the model it would have ended with
    if ended:
        best = ended.get("best_model_checkpoint") if training_args.load_best_model_at_end else None
        best = best and os.path.join(output_dir, os.path.basename(best))  # where the folder is now
        closing_from = best if best and os.path.isdir(best) else checkpoint
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report (in ANSI colours): summarised in one line below
    try:
        model, loading = AutoModelForAudioClassification.from_pretrained(
            closing_from or model_args.model_name_or_path, ignore_mismatched_sizes=True, output_loading_info=True,
            **config_kwargs,
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    new = sorted({key.split(".")[0] for key in loading.get("missing_keys", [])} | {
        str(item[0] if isinstance(item, (tuple, list)) else item).split(".")[0]
        for item in loading.get("mismatched_keys", [])
    })
    if training_args.should_log and ended:
        print(f"run {identity['run_id']}: its training ended at {describe_end(ended)} in {checkpoint}, and its "
              f"closing evaluation and save did not run: running them on {closing_from}, without training.")
    elif training_args.should_log:
        # A resumed run's head (and encoder) come from its checkpoint: nothing of it is newly initialised.
        origin = f"; the encoder and head of {checkpoint}" if checkpoint else (
            f"; newly initialised: {', '.join(new)}" if new else "")
        print(f"model: the encoder of {model_args.model_name_or_path}{origin} ({len(label_names)} outputs)")
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(model_args.model_name_or_path)
    except OSError:  # a folder without preprocessor_config.json: the extractor its config implies
        feature_extractor = MynaFeatureExtractor.from_config(model.config)

    cache_dir = data_args.cache_dir or os.path.join(output_dir, "cache")
    features, dropped = {}, {}
    with training_args.main_process_first(desc="spectrograms"):
        for split, dataset in splits.items():
            key = cache_key(getattr(dataset, "_fingerprint", None), feature_extractor.to_dict(), split)
            cache_file = None if data_args.on_the_fly else os.path.join(cache_dir, f"chunks-{split}-{key}.arrow")
            features[split], dropped[split] = prepare_features(dataset, feature_extractor, data_args, cache_file)

    # Fine-tuning mode.
    freeze_unused_tokenizers(model, model.config.default_patch_mode)
    if model_args.finetuning_mode == "frozen":
        freeze_encoder(model)
    layer_decay = model_args.layer_decay if model_args.finetuning_mode == "layerwise" else 1.0
    if not training_args.metric_for_best_model_given:
        training_args.metric_for_best_model = spec.primary
        training_args.greater_is_better = True

    chunk_frames = model.config.chunk_frames
    train_collator = MynaDataCollatorForAudioClassification(
        random_crop=True,
        chunk_frames=chunk_frames,
        time_mask_frames=data_args.time_mask_frames,
        num_time_masks=data_args.num_time_masks,
        freq_mask_bins=data_args.freq_mask_bins,
        num_freq_masks=data_args.num_freq_masks,
        seed=training_args.seed,
    )
    callbacks = [RunIdentityCallback(output_dir)] + ([EtaCallback()] if training_args.disable_tqdm else [])
    if training_args.early_stopping_patience and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=training_args.early_stopping_patience))
    trainer = MynaTrainer(
        model=model,
        args=training_args,
        train_dataset=features["train"],
        eval_dataset=features["validation"],
        data_collator=train_collator,
        eval_data_collator=MynaDataCollatorForAudioClassification(chunk_frames=chunk_frames),
        processing_class=feature_extractor,
        compute_metrics=make_compute_metrics(spec),
        callbacks=callbacks,
        layer_decay=layer_decay,
        mask_ratio=model_args.token_mask_ratio or None,
    )
    use_log_lines(trainer)  # one readable line per log entry, not Trainer's printed dicts

    if ended:
        trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        trainer.state.is_local_process_zero = trainer.is_local_process_zero()  # this process's, not the saver's
        trainer.state.is_world_process_zero = trainer.is_world_process_zero()
        train_metrics = {}
    else:
        train_metrics = trainer.train(resume_from_checkpoint=checkpoint).metrics
    trainer.remove_callback(EarlyStoppingCallback)  # the closing evaluations are reports, not stopping criteria
    results = {"validation": trainer.evaluate(metric_key_prefix="validation")}
    if "test" in features:
        results["test"] = trainer.evaluate(features["test"], metric_key_prefix="test")
    trainer.save_model(output_dir)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary = {
        "output_dir": output_dir,
        "task": spec.name,
        "problem_type": spec.problem_type,
        "primary": spec.primary,
        "num_clips": {split: len(dataset) for split, dataset in features.items()},
        "dropped": dropped,
        "train_loss": losses,
        "train_runtime": train_metrics.get("train_runtime"),
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "epochs": trainer.state.epoch,
        "num_trainable_parameters": num_trainable,
        "world_size": training_args.world_size,
        "device": f"{training_args.device} x {training_args.world_size} process"
        + ("es" if training_args.world_size > 1 else ""),
        "precision": "bfloat16 autocast" if training_args.bf16 else "float16 autocast" if training_args.fp16
        else "float32",
        **results,
    }
    if trainer.is_world_process_zero():
        feature_extractor.save_pretrained(output_dir)
        settings = {
            **{k: v for k, v in vars(model_args).items()},
            **{k: v for k, v in vars(data_args).items() if v is not None},
            "world_size": training_args.world_size,
            "epochs_trained": round(trainer.state.epoch or 0, 2),
            "best_checkpoint": os.path.basename(trainer.state.best_model_checkpoint or "") or None,
        }
        for key in ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "weight_decay", "warmup_steps", "lr_scheduler_type", "seed", "bf16", "metric_for_best_model",
                    "early_stopping_patience", "optim"):
            value = getattr(training_args, key)
            settings[key] = getattr(value, "value", value)  # enums as their names
        sizes = ", ".join(f"{split} {len(d)}" for split, d in features.items())
        skipped = sum(dropped.values())
        write_model_card(
            output_dir,
            model.config,
            num_parameters=model.num_parameters(),
            training_data=f"Fine-tuned on {spec.name} ({spec.source}): {sizes} clips"
            + (f"; {skipped} undecodable clips dropped" if skipped else "") + ".",
            training_config=settings,
            evaluation_table=f"Metrics ({spec.metric}; the model averages chunk logits over each clip):\n\n"
            + evaluation_table(results),
            source=f"{model_args.model_name_or_path} fine-tuned with `training/finetune.py` "
            f"({model_args.finetuning_mode})",
            tags=["audio-classification", "fine-tuned"],
        )
        write_json(os.path.join(output_dir, "results.json"), summary, indent=2, default=str)
        if push_to_hub:
            repo_id = training_args.hub_model_id or os.path.basename(os.path.abspath(output_dir))
            summary["hub_url"] = push_folder_to_hub(
                output_dir,
                repo_id,
                bool(training_args.hub_private_repo),
                commit_message="Upload Myna fine-tuned with myna_training.finetune",
                ignore_patterns=["checkpoint-*", "cache/*", "runs/*", "results.json"],  # the model alone
            )
        print(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    lines = [
        "",
        "=== Myna fine-tuning summary ===",
        f"task: {summary['task']} ({summary['problem_type']}); clips {summary['num_clips']}",
        f"trainable parameters: {summary['num_trainable_parameters']:,}; epochs {summary['epochs']:.2f}",
        f"device: {summary['device']}; precision {summary['precision']}",
    ]
    if summary["train_loss"]:
        lines.append(f"training loss: {summary['train_loss'][0]:.4f} (first log) -> {summary['train_loss'][-1]:.4f}")
    for split in ("validation", "test"):
        if split in summary:
            value = summary[split].get(f"{split}_{summary['primary']}")
            lines.append(f"{split} {summary['primary']}: {value:.4f}")
    lines.append(f"saved to {summary['output_dir']} (pipeline('audio-classification', model=...) loads it)")
    if "hub_url" in summary:
        lines.append(f"pushed to {summary['hub_url']}")
    return "\n".join(lines)


if __name__ == "__main__":
    from myna_common.cli_support import run_cli
    from myna_training.process_errors import exit_process

    exit_process(run_cli(main, "finetune.py"))
