"""The one way a pre-training becomes a `from_pretrained` folder, at the end of a run or from any of its checkpoints.

`pretrain.py` exports its model at the end of a run (`save_export`); the ablation runner's quality-vs-CPU curve
exports the checkpoints along it (`export_checkpoint`). Both build the model from the same arguments with
`build_model`/`config_from_settings`, so an export of a checkpoint is the model the run trained, never a second
reading of the settings that could drift from it.

    model_dir/   config.json  model.safetensors  preprocessor_config.json  README.md (the model card)
"""

from __future__ import annotations

import os
from dataclasses import fields

import torch

from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaForContrastivePretraining
from myna_training.arguments import ModelArguments
from myna_training.run_folder import RUN_FILE, read_identity

# The checkpoint file of `TrainingProgress`, the first object pretrain.py registers for checkpointing.
PROGRESS_STATE = "custom_checkpoint_0.pkl"
MODEL_WEIGHTS = "model.safetensors"


def build_config(model_args: ModelArguments) -> MynaConfig:
    """The run's `MynaConfig`: that of `--init_from`'s model, or the one the model arguments describe."""
    if model_args.init_from:
        return MynaConfig.from_pretrained(model_args.init_from)
    return model_args.to_config()


def build_model(model_args: ModelArguments) -> MynaForContrastivePretraining:
    """The model a pre-training starts from: `--init_from`'s weights, or a new model of `build_config`'s shape."""
    if model_args.init_from:
        return MynaForContrastivePretraining.from_pretrained(model_args.init_from)
    return MynaForContrastivePretraining(build_config(model_args))


def config_from_settings(settings: dict) -> MynaConfig:
    """The `MynaConfig` of a run from the resolved settings in its `run.json` (those of `ModelArguments`)."""
    names = {f.name for f in fields(ModelArguments)}
    return build_config(ModelArguments(**{k: v for k, v in settings.items() if k in names}))


def save_export(
    model: MynaForContrastivePretraining,
    feature_extractor: MynaFeatureExtractor,
    model_dir: str,
    model_card_kwargs: dict | None = None,
) -> str:
    """Writes the encoder, its projection, the feature extractor (and the model card) to `model_dir`."""
    if model_card_kwargs is None:
        model.save_pretrained(model_dir)
    else:
        model.save_pretrained(model_dir, model_card_kwargs=model_card_kwargs)
    feature_extractor.save_pretrained(model_dir)
    return model_dir


def read_progress(checkpoint_dir: str) -> dict:
    """A checkpoint's `TrainingProgress`: `{"step", "micro_batches", "examples_seen", "cpu_seconds"}`. Read with
    `weights_only=True`: it is a dict of numbers, and nothing else in the file is run."""
    path = os.path.join(checkpoint_dir, PROGRESS_STATE)
    if not os.path.isfile(path):
        raise ValueError(f"{checkpoint_dir} has no {PROGRESS_STATE}: not a checkpoint written by pretrain.py.")
    return dict(torch.load(path, weights_only=True))


def export_checkpoint(checkpoint_dir: str, model_dir: str) -> dict:
    """Writes the model of one pre-training checkpoint as a `from_pretrained` folder (as `pretrain.py` exports at the
    end of a run) and returns the run's progress at that checkpoint (`read_progress`)."""
    from safetensors.torch import load_file

    identity = read_identity(checkpoint_dir)
    if identity is None:
        raise ValueError(f"{checkpoint_dir} has no {RUN_FILE}: not a checkpoint written by pretrain.py.")
    progress = read_progress(checkpoint_dir)
    config = config_from_settings(identity["settings"])
    model = MynaForContrastivePretraining(config)
    model.load_state_dict(load_file(os.path.join(checkpoint_dir, MODEL_WEIGHTS)))
    save_export(model, MynaFeatureExtractor.from_config(config), model_dir)
    return progress


__all__ = [
    "PROGRESS_STATE", "build_config", "build_model", "config_from_settings", "export_checkpoint", "read_progress",
    "save_export",
]
