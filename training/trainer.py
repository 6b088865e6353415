"""`MynaTrainer`: transformers' `Trainer` with what fine-tuning a Myna classifier needs beyond the stock one.

- Two collators: random `chunk_frames` crops for training, every chunk with `audio_index` averaging for evaluation
  and prediction (the Myna paper's probes average a track's chunk outputs); new crops each epoch.
- Fine-tuning modes: a frozen encoder (only the head trains), full fine-tuning, and layer-wise learning-rate decay
  (Bao et al. 2022, BEiT; Clark et al. 2020, ELECTRA): block `i` of `L` trains at `lr * decay ** (L - i)`, the
  embeddings at `lr * decay ** (L + 1)`, the final LayerNorm and the head at `lr`.
- Myna's own augmentation, token masking (`mask_ratio`), on training forwards only.
- Bounded evaluation (`max_eval_chunks`): an evaluation batch holds every chunk of its clips, an hour of audio is
  ~1,170 chunks; the forward passes take at most `max_eval_chunks` of them at a time (a long clip is split across
  passes) and the per-chunk logits are averaged per clip afterwards, the same mean as one pass.

A user's own `Trainer` script can use it in place of `Trainer`:

    >>> trainer = MynaTrainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
    ...                       data_collator=MynaDataCollatorForAudioClassification(random_crop=True),
    ...                       eval_data_collator=MynaDataCollatorForAudioClassification(),
    ...                       compute_metrics=compute_metrics)
"""

import math
import re
from contextlib import contextmanager

import torch
from transformers import Trainer, TrainerCallback


FINETUNING_MODES = ("frozen", "full", "layerwise")
_BLOCK = re.compile(r"(?:^|\.)encoder\.layers\.(\d+)\.")


def layer_id(parameter_name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise decay: 0 for the embeddings (tokenizers), `i + 1` for block `i`,
    `num_layers + 1` for the final LayerNorm and the head (BEiT's assignment)."""
    match = _BLOCK.search(parameter_name)
    if match is not None:
        return int(match.group(1)) + 1
    if ".embeddings." in f".{parameter_name}":
        return 0
    return num_layers + 1


def layerwise_parameter_groups(
    model: torch.nn.Module, learning_rate: float, layer_decay: float, weight_decay: float, decay_names: set[str]
) -> list[dict]:
    """Optimiser groups, one per (depth, decayed or not), with `lr = learning_rate * layer_decay ** (L + 1 - depth)`.

    `decay_names` are the parameters that get `weight_decay` (Trainer's choice: not biases or LayerNorm gains).
    Frozen parameters are left out. Each group also records its `layer_id` for inspection.
    """
    num_layers = model.config.num_hidden_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        depth, decayed = layer_id(name, num_layers), name in decay_names
        group = groups.setdefault(
            (depth, decayed),
            {
                "params": [],
                "weight_decay": weight_decay if decayed else 0.0,
                "lr": learning_rate * layer_decay ** (num_layers + 1 - depth),
                "layer_id": depth,
            },
        )
        group["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def freeze_encoder(model: torch.nn.Module) -> int:
    """Stops gradients to the encoder (`model.myna`); returns the number of frozen parameters."""
    frozen = 0
    for parameter in model.myna.parameters():
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    return frozen


def freeze_unused_tokenizers(model: torch.nn.Module, patch_mode: str | None) -> None:
    """A hybrid model fine-tuned in one patch mode never runs the other tokenizer: freeze it, so that DDP and the
    optimiser skip it (and it keeps its pre-trained weights)."""
    used = set(model.myna._tokenizer_indices(patch_mode))
    for index, tokenizer in enumerate(model.myna.embeddings.patch_embeddings):
        if index not in used:
            tokenizer.requires_grad_(False)


class CollatorEpochCallback(TrainerCallback):
    """Tells the training collator the epoch before its data loader starts (new crops every epoch)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        if hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(math.floor(state.epoch + 1e-6) if state.epoch is not None else 0)


class MynaTrainer(Trainer):
    """`Trainer` with a separate evaluation collator, layer-wise learning-rate decay and token masking.

    Args (beyond `Trainer`'s):
        eval_data_collator: collates evaluation and prediction batches (defaults to `data_collator`).
        layer_decay (`float`, defaults to 1.0): layer-wise learning-rate decay factor; 1.0 is off.
        mask_ratio (`float`, *optional*): drop this fraction of patch tokens in training forwards.
        max_eval_chunks (`int`, *optional*): at most this many chunks per evaluation forward pass (defaults to
            `args.max_eval_chunks` when the arguments have it; `None` or 0: no bound).
    """

    def __init__(
        self,
        *args,
        eval_data_collator=None,
        layer_decay: float = 1.0,
        mask_ratio: float | None = None,
        max_eval_chunks: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if max_eval_chunks is None:
            max_eval_chunks = getattr(self.args, "max_eval_chunks", None)
        if max_eval_chunks is not None and max_eval_chunks < 0:
            raise ValueError(f"max_eval_chunks must be positive (0: no bound), got {max_eval_chunks}.")
        self.max_eval_chunks = max_eval_chunks or None
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}: 1.0 turns it off, 0.75 is common.")
        if mask_ratio is not None and not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}.")
        self.eval_data_collator = eval_data_collator
        self.layer_decay = layer_decay
        self.mask_ratio = mask_ratio or None
        self.add_callback(CollatorEpochCallback(self.data_collator))

    @contextmanager
    def _collating_for_evaluation(self):
        """Builds evaluation data loaders with `eval_data_collator` (the loader keeps the collator it was given)."""
        training_collator = self.data_collator
        if self.eval_data_collator is not None:
            self.data_collator = self.eval_data_collator
        try:
            yield
        finally:
            self.data_collator = training_collator

    def get_eval_dataloader(self, eval_dataset=None):
        with self._collating_for_evaluation():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset):
        with self._collating_for_evaluation():
            return super().get_test_dataloader(test_dataset)

    def create_optimizer(self, model=None):
        if self.layer_decay == 1.0 or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        groups = layerwise_parameter_groups(
            model,
            self.args.learning_rate,
            self.layer_decay,
            self.args.weight_decay,
            set(self.get_decay_parameter_names(model)),
        )
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        values, audio_index = inputs.get("input_values"), inputs.get("audio_index")
        if self.max_eval_chunks is None or values is None or audio_index is None or len(values) <= self.max_eval_chunks:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        return self._bounded_prediction_step(model, inputs, prediction_loss_only)

    def _bounded_prediction_step(self, model, inputs, prediction_loss_only):
        """`prediction_step` for a batch of more than `max_eval_chunks` chunks: per-chunk logits in passes of at
        most `max_eval_chunks` chunks, then averaged per clip (`pool_chunks`) and scored by the model's own loss."""
        from modeling_myna import pool_chunks
        from transformers.loss.loss_utils import ForSequenceClassificationLoss

        inputs = self._prepare_inputs(inputs)
        values, audio_index = inputs["input_values"], inputs["audio_index"]
        labels = inputs.get("labels")
        passed = {k: v for k, v in inputs.items() if k not in ("input_values", "audio_index", "labels")}
        with torch.no_grad(), self.compute_loss_context_manager():
            chunk_logits = torch.cat(
                [
                    model(input_values=values[start : start + self.max_eval_chunks], **passed).logits
                    for start in range(0, len(values), self.max_eval_chunks)
                ]
            )
            num_clips = len(labels) if labels is not None else None
            logits = pool_chunks(chunk_logits, audio_index.to(chunk_logits.device), num_clips)
            loss = None
            if labels is not None:
                config = self.accelerator.unwrap_model(model).config
                loss = ForSequenceClassificationLoss(labels.to(logits.device), logits, config).detach().mean()
        if prediction_loss_only:
            return loss, None, None
        return loss, logits, labels

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.mask_ratio and model.training:
            inputs = {**inputs, "mask_ratio": self.mask_ratio}
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )


__all__ = [
    "FINETUNING_MODES",
    "CollatorEpochCallback",
    "MynaTrainer",
    "freeze_encoder",
    "freeze_unused_tokenizers",
    "layer_id",
    "layerwise_parameter_groups",
]
