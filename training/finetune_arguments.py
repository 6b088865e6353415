"""Arguments of `training/finetune.py`: what to fine-tune, on which data, and `transformers.TrainingArguments`.

Parsed by `HfArgumentParser` from flags or from one `.yaml` / `.json` file, as `pretrain.py`'s
(`myna_training.arguments.parse_arguments`). `MynaFinetuningArguments` is `TrainingArguments` with defaults for
fine-tuning on clips: evaluate and save every epoch, keep the best checkpoint by the task's validation metric, stop
early, keep the extra data columns the collator reads (`remove_unused_columns=False`).
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from myna_training.arguments import parse_arguments


@dataclass
class FinetuneModelArguments:
    """The Myna checkpoint to fine-tune, its head and how much of it trains."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A Myna folder or Hub id: pre-trained (outputs/myna-pretrain), converted or a classifier."},
    )
    finetuning_mode: str = field(
        default="full",
        metadata={"help": "'frozen' (train the head only), 'full', or 'layerwise' (full with layer-wise lr decay)."},
    )
    layer_decay: float = field(
        default=0.75, metadata={"help": "'layerwise': block i of L trains at lr * layer_decay ** (L - i)."}
    )
    patch_mode: str | None = field(
        default=None, metadata={"help": "Hybrid models: 'square', 'vertical' or 'both' (default: the config's)."}
    )
    classifier_hidden_size: int = field(
        default=0, metadata={"help": "0: a linear head; else an MLP head with this hidden width (e.g. 512)."}
    )
    classifier_dropout: float = field(default=0.0, metadata={"help": "Dropout of the MLP head's hidden layer."})
    token_mask_ratio: float = field(
        default=0.0, metadata={"help": "Myna's token masking while training: drop this fraction of patch tokens."}
    )


@dataclass
class FinetuneDataArguments:
    """A task of `myna_evaluation.tasks`, or any `datasets` audio dataset; features and augmentation."""

    task: str | None = field(
        default=None,
        metadata={
            "help": "A task of myna_evaluation.tasks: synthetic-key|tempo|tags|style (generated), "
            "mtt|gtzan|giantsteps|emomusic, MARBLE's (mtg-genre, nsynth-pitch, ...) or custom:<task.yaml or folder>."
        },
    )
    task_path: str | None = field(
        default=None, metadata={"help": "Data of a paper task: a folder (original or MARBLE layout) or a Hub id."}
    )
    synthetic_sizes: str = field(
        default="256,96,96", metadata={"help": "Generated tasks: train,validation,test clips."}
    )
    synthetic_duration: float = field(default=10.0, metadata={"help": "Generated tasks: seconds per clip."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `datasets` source: a Hub id, 'audiofolder' (with --data_dir), 'csv' or 'json'."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    data_dir: str | None = field(default=None, metadata={"help": "data_dir of --dataset_name (audiofolder)."})
    train_file: str | None = field(default=None, metadata={"help": "CSV/JSON of the training split."})
    validation_file: str | None = field(default=None, metadata={"help": "CSV/JSON of the validation split."})
    test_file: str | None = field(default=None, metadata={"help": "CSV/JSON of the test split."})
    audio_column_name: str = field(
        default="audio", metadata={"help": "Audio column: a datasets Audio feature, a path or an audio dict."}
    )
    label_column_name: str = field(
        default="label", metadata={"help": "Label column; comma-separated columns for several regression targets."}
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "single_label_classification, multi_label_classification or regression (default: from the "
            "label column's type)."
        },
    )
    tag_separator: str = field(
        default=";", metadata={"help": "Multi-label string columns: the separator of the tags ('guitar;piano')."}
    )
    metric: str | None = field(
        default=None,
        metadata={"help": "myna_accuracy, myna_tagging, myna_r2 or myna_key (default: from the problem type)."},
    )
    train_split_name: str = field(default="train", metadata={"help": "Split to train on."})
    validation_split_name: str = field(default="validation", metadata={"help": "Split for early stopping."})
    test_split_name: str = field(default="test", metadata={"help": "Split evaluated once at the end, if present."})
    validation_split_percentage: int = field(
        default=10, metadata={"help": "Held out of the training split when there is no validation split."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use at most this many training clips."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "At most this many validation/test clips."})
    on_the_fly: bool = field(
        default=False,
        metadata={"help": "Compute spectrograms while training (large sets) instead of once, cached, with .map."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where the chunk cache (Arrow) goes (default: <output_dir>/cache)."}
    )
    preprocessing_batch_size: int = field(default=16, metadata={"help": "Clips per .map batch."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for .map."})
    time_mask_frames: int = field(
        default=0, metadata={"help": "SpecAugment: widest time mask in frames (0: off). Training only."}
    )
    num_time_masks: int = field(default=2, metadata={"help": "SpecAugment: time masks per crop."})
    freq_mask_bins: int = field(
        default=0, metadata={"help": "SpecAugment: tallest frequency mask in mel bins (0: off). Training only."}
    )
    num_freq_masks: int = field(default=2, metadata={"help": "SpecAugment: frequency masks per crop."})

    def __post_init__(self):
        if (self.task is None) == (self.dataset_name is None and self.train_file is None):
            raise ValueError(
                "name the data once: --task (e.g. synthetic-style, gtzan with --task_path) or --dataset_name "
                "(a Hub id, audiofolder with --data_dir) or --train_file (CSV/JSON with audio paths and labels)."
            )


@dataclass
class MynaFinetuningArguments(TrainingArguments):
    """`TrainingArguments` with fine-tuning defaults; `--early_stopping_patience` added."""

    output_dir: str | None = field(default="outputs/myna-finetune", metadata={"help": "Checkpoints and the model."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the fine-tuning run already in output_dir (its checkpoints, model, results); "
                  "without it a new run into a non-empty output_dir stops."},
    )
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs (early stopping may end sooner)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate (of the head, with decay)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Clips per process per step."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Clips (all their chunks) per batch."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps, or a fraction of them when < 1."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate: 'no', 'steps' or 'epoch'."}
    )
    save_strategy: SaveStrategy | str = field(
        default="epoch", metadata={"help": "When to save: 'no', 'steps', 'epoch', 'best'."}
    )
    logging_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to log: 'no', 'steps' or 'epoch'."}
    )
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best one always)."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End on the best validation checkpoint."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep example_index, which the seeded crops read."}
    )
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers: none, all, tensorboard."})
    early_stopping_patience: int | None = field(
        default=5, metadata={"help": "Stop after this many evaluations without improvement (none: never)."}
    )
    max_eval_chunks: int | None = field(
        default=512,
        metadata={
            "help": "At most this many 3 s chunks per evaluation forward pass: a long clip is split across passes "
            "and its logits averaged as in one. 512 keeps ViT-S inference activations near 1 GiB (hybrid, both "
            "tokenizers; 0.5 GiB square), inside a 2 GB budget. 0: no bound."
        },
    )

    def __post_init__(self):
        from myna_common.progress import is_terminal

        # Without a --metric_for_best_model, the script selects on the task's primary metric (TrainingArguments
        # would default to the loss).
        self.metric_for_best_model_given = self.metric_for_best_model is not None
        if self.max_eval_chunks is not None and self.max_eval_chunks < 0:
            raise ValueError(f"max_eval_chunks={self.max_eval_chunks}: use a positive number of chunks, or 0 for no bound.")
        if self.disable_tqdm is None and not is_terminal():
            self.disable_tqdm = True  # in a log, Trainer prints its metrics as lines instead of bar debris
        super().__post_init__()


FINETUNE_ARGUMENT_GROUPS = (FinetuneModelArguments, FinetuneDataArguments, MynaFinetuningArguments)


def parse_finetune_arguments(argv: list[str] | None = None):
    """`(model_args, data_args, training_args)` from flags or one `.yaml`/`.json` file (`--config f.yaml`)."""
    return parse_arguments(argv, groups=FINETUNE_ARGUMENT_GROUPS)


__all__ = [
    "FinetuneDataArguments",
    "FinetuneModelArguments",
    "MynaFinetuningArguments",
    "parse_finetune_arguments",
]
