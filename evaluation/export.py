"""Exports a trained linear probe and its encoder as one `MynaForAudioClassification` folder.

    python evaluation/export.py --model path/to/myna --probe out/gtzan/linear_probe.pt --output_dir myna-gtzan

The probe's standardisation is folded into the classifier (`W' = W / std`, `b' = b - (mean / std) W`), so the
folder needs nothing but transformers and `modeling_myna` (or `trust_remote_code=True`):
`pipeline("audio-classification", model=folder)` embeds every chunk, applies the classifier and averages the
logits over the chunks of the recording, which is exactly what the probe computed per track.
"""

import os
import pickle
import sys
from dataclasses import dataclass, field


@dataclass
class ExportArguments:
    model: str = field(metadata={"help": "The encoder folder the probe was trained on."})
    probe: str = field(metadata={"help": "A linear_probe.pt written by evaluation/probe.py."})
    output_dir: str = field(metadata={"help": "Where the classification model folder goes."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Write into output_dir even if it is not empty (replacing a model there)."}
    )


def parse_arguments(argv: list[str] | None = None) -> ExportArguments:
    from myna_common.cli_support import dataclass_parser, parse_into

    parser = dataclass_parser(
        ExportArguments,
        prog="export.py",
        description="A linear probe of evaluation/probe.py and its encoder as one audio-classification folder. "
        "--debug (or MYNA_DEBUG=1) shows tracebacks.",
    )
    return parse_into(parser, ExportArguments, sys.argv[1:] if argv is None else argv)[0]


if __name__ == "__main__":
    # Arguments first: `--help` and mistakes answer before torch and transformers are imported.
    from myna_common.progress import quiet_library_bars

    quiet_library_bars(datasets=False)  # in a log: no loading bars, datasets' bars every 30 s (before tqdm loads)
    from myna_common.cli_support import run_cli

    if run_cli(parse_arguments, "export.py") != 0:
        sys.exit(2)

import torch  # noqa: E402

from myna_evaluation.scoring import SINGLE_LABEL  # noqa: E402


def fold_standardization(
    state: dict, mean: torch.Tensor, std: torch.Tensor, standardize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(weight (C, D), bias (C,))` of one `nn.Linear` equal to the probe on raw embeddings."""
    weight, bias = state["w0"].double(), state["b0"].reshape(-1).double()  # (D, C), (C,)
    if standardize:
        bias = bias - (mean.double() / std.double()) @ weight
        weight = weight / std.double()[:, None]
    return weight.T.float().contiguous(), bias.float()


def load_probe(probe_path: str) -> dict:
    """A `linear_probe.pt` read with `torch.load(weights_only=True)`: tensors and plain containers only.

    A probe file may come from anyone; unpickling arbitrary objects would run their code, so anything else is
    refused. What `probe.py` writes (tensors, numbers, strings, lists, dicts) loads as is.
    """
    if not os.path.isfile(probe_path):
        raise FileNotFoundError(f"no probe at {probe_path}: evaluation/probe.py writes <output_dir>/<task>/linear_probe.pt.")
    try:
        probe = torch.load(probe_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"refusing to load {probe_path}: it holds objects other than tensors and plain containers, which "
            f"torch.load(weights_only=True) does not unpickle because they can run code ({error}). Re-create it "
            "with evaluation/probe.py, or load it yourself only if you trust its source."
        ) from None
    except Exception as error:  # not a torch file at all
        raise ValueError(f"{probe_path} is not a probe file torch.load can read ({type(error).__name__}).") from None
    if not isinstance(probe, dict) or "state" not in probe:
        raise ValueError(f"{probe_path} holds a {type(probe).__name__}, not a probe written by evaluation/probe.py.")
    return probe


def export_linear_probe(model_path: str, probe_path: str, output_dir: str) -> str:
    """Writes `output_dir` with the encoder of `model_path` and the linear probe of `probe_path` as its head."""
    import modeling_myna  # noqa: F401  registers Myna with the Auto classes
    from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaForAudioClassification

    probe = load_probe(probe_path)
    if probe.get("state") is None or "w1" in probe["state"]:
        raise ValueError(f"{probe_path} holds no linear probe (hidden width 0); only linear probes can be exported.")
    if not {"task", "config", "mean", "std"} <= set(probe):
        raise ValueError(f"{probe_path} lacks the task, configuration or standardisation of a probe.py probe.")
    if probe.get("pooling", "mean") != "mean":
        raise ValueError(
            f"{probe_path} was trained on {probe['pooling']} pooling; the exported model pools by the mean only: "
            "export a probe trained with probe.py's default --pooling mean."
        )
    task = probe["task"]
    label_names = task["label_names"]
    config = MynaConfig.from_pretrained(model_path)
    if probe.get("layer") not in (None, config.num_hidden_layers):
        raise ValueError(
            f"{probe_path} was trained on layer {probe['layer']} of {config.num_hidden_layers}; the exported model "
            "gives its last layer: export a probe trained with probe.py's default --layers last."
        )
    if probe.get("patch_mode"):
        config.default_patch_mode = probe["patch_mode"]
    weight, bias = fold_standardization(probe["state"], probe["mean"], probe["std"], probe["config"]["standardize"])
    if weight.shape != (len(label_names), config.embedding_size()):
        raise ValueError(
            f"the probe maps {weight.shape[1]}-wide embeddings to {weight.shape[0]} outputs, but {model_path} gives "
            f"{config.embedding_size()}-wide embeddings in mode {config.default_patch_mode!r}: "
            "was it trained on this model?"
        )
    config.num_labels = len(label_names)
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: index for index, name in enumerate(label_names)}
    config.problem_type = task["problem_type"]
    # The head is new to the encoder's folder, and transformers reports it as "MISSING ... newly initialized":
    # true for an instant only, since the probe's weights replace it on the next line. Quiet that report.
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        model = MynaForAudioClassification.from_pretrained(model_path, config=config)
    finally:
        transformers_logging.set_verbosity(verbosity)
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    kind = "classifier" if task["problem_type"] == SINGLE_LABEL else task["problem_type"].replace("_", " ")
    model.save_pretrained(
        output_dir,
        model_card_kwargs={
            "source": f"{os.path.abspath(model_path)} with a linear probe ({kind}) trained on {task['name']} "
            f"({task['source']}), validation {task['primary']} {probe['valid_score']:.4f}",
        },
    )
    MynaFeatureExtractor.from_config(config).save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> str:
    from myna_common.cli_support import check_model_name, check_output_folder

    args = parse_arguments(argv)
    check_model_name(args.model)
    state = check_output_folder(
        args.output_dir, overwrite=args.overwrite_output_dir, option="--output_dir",
        overwrite_flag="--overwrite_output_dir", what="classifier", own=lambda _: True,
    )  # fmt: skip
    if state == "own" and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {args.output_dir} is not empty ({', '.join(sorted(os.listdir(args.output_dir))[:4])}, "
            "...): choose a new folder, or pass --overwrite_output_dir to replace what is there."
        )
    path = export_linear_probe(args.model, args.probe, args.output_dir)
    print(f"wrote {path}: the encoder of {args.model} with the probe {args.probe} as its classifier; use "
          f"pipeline('audio-classification', model='{path}', pipeline_class=MynaAudioClassificationPipeline)")
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main, "export.py"))
