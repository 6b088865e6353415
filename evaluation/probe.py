"""Evaluates one checkpoint on a list of downstream tasks with the JukeMIR probe protocol, and writes the report.

    python evaluation/probe.py --model path/to/myna --tasks synthetic-key,synthetic-tags --output_dir out/
    python evaluation/probe.py --model path/to/myna --tasks mtt,gtzan,giantsteps,emomusic \
        --dataset_paths mtt=/data/mtt,gtzan=/data/gtzan,giantsteps=/data/gs,emomusic=/data/emo
    python evaluation/probe.py --model path/to/myna --tasks mtt,gtzan,nsynth-pitch,custom:my_task.yaml \
        --dataset_paths mtt=/data/mtt,gtzan=/data/gtzan,nsynth=/data/nsynth

For each task: chunk embeddings of the three splits (cached, `extract.py`), the 216-probe grid trained as batched
groups (`grid.py`) on every embedding the model offers (square, vertical and both for a hybrid; with `--layers
all`, each of those at every layer, as MARBLE probes), the configuration and embedding chosen by VALIDATION score,
then one test evaluation through the `evaluate` metric modules. Writes `results.json` (every metric, chosen
configuration, embedding and layer, validation score, the whole grid, the probe protocol), `table.md` (a line naming
the protocol, then the paper's Table 1 layout with its published rows), a t-SNE PNG per classification task, and
the best linear probe of each task (`<task>/linear_probe.pt`, for `export.py`; only when it probes the model's own
pooled output: the last layer, mean pooling).
"""

import json
import logging
import os
import sys
import time
from dataclasses import asdict

from myna_evaluation.probe_arguments import (  # noqa: F401 (the options, and their old import path here)
    ARGUMENT_GROUPS,
    LAYERS_FORM,
    PROTOCOLS,
    SYNTHETIC_TASK_NAMES,
    ModelArguments,
    ProbeArguments,
    ReportArguments,
    TaskArguments,
    _parse_mapping,
    check_protocol_arguments,
    parse_arguments,
    parse_layers,
)


logger = logging.getLogger(__name__)

if __name__ == "__main__":
    # Arguments first: `--help` and mistakes answer before torch, transformers and datasets are imported.
    from myna_common.progress import quiet_library_bars

    quiet_library_bars(datasets=False)  # in a log: no loading bars, datasets' bars every 30 s (before tqdm loads)
    from myna_common.cli_support import run_cli

    if run_cli(parse_arguments, "probe.py") != 0:
        sys.exit(2)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from myna_common.atomic import atomic_path, write_json, write_text  # noqa: E402
from myna_common.progress import format_seconds, progress_bar  # noqa: E402

from myna_evaluation.extract import EmbeddingExtractor, ExtractionSettings, extract_split, split_patch_modes  # noqa: E402
from myna_evaluation.extract import load_extractor  # noqa: E402
from myna_evaluation.handcrafted import is_handcrafted  # noqa: E402
from myna_evaluation.grid import (  # noqa: E402
    GridSettings,
    ProbeData,
    Standardizer,
    probe_grid,
    select_best,
    track_outputs,
    train_grid,
)
from myna_evaluation.report import column_notes, plot_tsne, protocol_line, render_table  # noqa: E402
from myna_evaluation.scoring import SINGLE_LABEL, compute_metrics  # noqa: E402
from myna_evaluation.task_families.marble import marble_probe_grid  # noqa: E402
from myna_evaluation.tasks import SPLITS, SYNTHETIC_TASKS, load_synthetic_task, synthetic_splits  # noqa: E402


def probe_data(splits: dict, mode_arrays: dict[str, np.ndarray], problem_type: str) -> ProbeData:
    """Tensors for the grid from the extracted splits (`mode_arrays[split]` is that split's `(chunks, D)`)."""
    tensors = {}
    for split, prefix in zip(SPLITS, ("train", "valid", "test")):
        embeddings = splits[split]
        labels = embeddings.labels
        y = (
            torch.tensor(labels, dtype=torch.long)
            if problem_type == SINGLE_LABEL
            else torch.tensor(np.asarray(labels, dtype=np.float32))
        )
        tensors[f"{prefix}_x"] = torch.from_numpy(np.ascontiguousarray(mode_arrays[split], dtype=np.float32))
        tensors[f"{prefix}_track"] = torch.from_numpy(embeddings.track_index)
        tensors[f"{prefix}_y"] = y
    return ProbeData(**tensors)


def split_outputs(data: ProbeData, result, split: str) -> np.ndarray:
    """A trained probe's per-track outputs on `split` ("valid" or "test"), `(num_tracks, C)`."""
    x, track, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_track"), getattr(data, f"{split}_y")
    if result.config.standardize:
        x = Standardizer.fit(data.train_x)(x)
    return track_outputs(result.state, x, track, len(y)).numpy()


def probe_candidates(
    spec, candidates: list[tuple], make_data, configs, settings: GridSettings, progress=True
) -> tuple:
    """The grid on each candidate embedding `(patch mode, layer)` (`make_data(candidate)` gives its `ProbeData`),
    and the candidate whose best probe has the best VALIDATION score; ties go to the first in `candidates`. Test
    scores play no part. Returns `(chosen candidate, its ProbeData, its results, {candidate: results})`; only the
    chosen candidate's tensors are kept."""
    grids, chosen, chosen_data, chosen_score = {}, None, None, None
    for candidate in candidates:
        mode, layer = candidate
        data = make_data(candidate)
        label = mode if layer is None else f"{mode}, layer {layer}"
        bar = progress_bar(
            total=len(configs), desc=f"{spec.name} probes ({label})", unit="probe", disable=not progress
        )
        grids[candidate] = train_grid(
            data, spec.problem_type, spec.metric, spec.label_names, configs, settings, progress=bar
        )
        bar.close()
        score = select_best(grids[candidate]).valid_score
        if chosen is None or score > chosen_score:
            chosen, chosen_data, chosen_score = candidate, data, score
    return chosen, chosen_data, grids[chosen], grids


def choose_and_test(spec, data: ProbeData, results: list) -> tuple:
    """The protocol's last step: the configuration with the best VALIDATION score, its full validation metrics, and
    its one test evaluation. Returns `(chosen result, validation metrics, test metrics)`."""
    chosen = select_best(results)
    valid_metrics = compute_metrics(spec, split_outputs(data, chosen, "valid"), data.valid_y.numpy())
    test_metrics = compute_metrics(spec, split_outputs(data, chosen, "test"), data.test_y.numpy())
    return chosen, valid_metrics, test_metrics


def evaluate_task(
    spec,
    dataset,
    extractor: EmbeddingExtractor,
    model_args: ModelArguments,
    probe_args: ProbeArguments,
    report_args: ReportArguments,
) -> dict:
    """Extraction, grid, selection by validation, one test evaluation; returns the task's report entry."""
    started = time.perf_counter()
    layers = parse_layers(probe_args.layers, extractor.num_layers)  # None: the last, the paper's
    train_hop = model_args.train_hop_frames
    if train_hop is None and probe_args.protocol == "marble":
        train_hop = extractor.chunk_frames  # MARBLE cuts training audio into non-overlapping windows
    settings = ExtractionSettings(
        train_hop_frames=train_hop,
        batch_size=model_args.extraction_batch_size,
        device=model_args.device,
        cache_dir=model_args.cache_dir or os.path.join(report_args.output_dir, "embeddings"),
        progress=report_args.progress,
        layers="last" if layers is None else "all",
        pooling=probe_args.pooling,
    )
    splits = {split: extract_split(extractor, spec, dataset[split], split, settings) for split in SPLITS}
    extracted = time.perf_counter()
    shape = splits["train"].embeddings.shape
    if layers is not None and (len(shape) != 3 or shape[1] != extractor.num_layers):
        raise RuntimeError(
            f"{model_args.model} gave embeddings of shape {shape[1:]} per chunk, not one per layer of its "
            f"{extractor.num_layers}: --layers needs a model that returns hidden_states."
        )

    modes = extractor.patch_modes
    if model_args.patch_modes:
        modes = [m.strip() for m in model_args.patch_modes.split(",") if m.strip()]
        unknown = sorted(set(modes) - set(extractor.patch_modes))
        if unknown:
            raise ValueError(
                f"patch modes {unknown} are not offered by {model_args.model}: it has {extractor.patch_modes}."
            )
    hybrid = extractor.is_myna and len(extractor.model.config.patch_sizes) > 1

    def mode_arrays(mode: str, layer: int | None) -> dict[str, np.ndarray]:
        """Each split's `(chunks, D)` embeddings of one patch mode at one layer (`None`: the only one extracted)."""
        arrays = {}
        for s in SPLITS:
            x = splits[s].embeddings if layer is None else splits[s].embeddings[:, layer]
            # A hybrid's "both" embedding is [square ; vertical], each half one mode's (mean, or [mean ; std]).
            arrays[s] = split_patch_modes(x, x.shape[-1] // 2, [mode])[mode] if hybrid else x
        return arrays

    configs = marble_probe_grid(probe_args.fast) if probe_args.protocol == "marble" else probe_grid(probe_args.fast)
    grid_settings = GridSettings(
        max_epochs=probe_args.max_epochs, patience=probe_args.patience, seed=probe_args.seed, device=model_args.device
    )
    # The embedding, like the configuration, is chosen on validation: the patch mode (the paper keeps the best of a
    # hybrid's three) and, with --layers, the layer (MARBLE's protocol), over every (mode, layer) pair.
    candidates = [(mode, layer) for mode in modes for layer in (layers or [None])]
    (mode, layer), data, results, grids = probe_candidates(
        spec,
        candidates,
        lambda candidate: probe_data(splits, mode_arrays(*candidate), spec.problem_type),
        configs,
        grid_settings,
        progress=report_args.progress,
    )
    chosen, valid_metrics, test_metrics = choose_and_test(spec, data, results)
    standardizer = Standardizer.fit(data.train_x)

    task_dir = os.path.join(report_args.output_dir, spec.name)
    os.makedirs(task_dir, exist_ok=True)
    linear_results = [r for r in results if r.config.hidden_size == 0]
    linear_path = None
    # export.py puts a probe on the model's own pooled output: the last layer, mean-pooled. Other probes stay in
    # results.json only, so that no exported classifier reads another embedding than the one it was trained on.
    exportable = layer in (None, extractor.num_layers - 1) and probe_args.pooling == "mean"
    if linear_results and exportable:  # MARBLE's grid has only MLPs: no linear probe to export
        linear = select_best(linear_results)
        linear_path = os.path.join(task_dir, "linear_probe.pt")
        with atomic_path(linear_path) as partial:
            torch.save(
                {
                    "state": linear.state,
                    "config": asdict(linear.config),
                    "valid_score": linear.valid_score,
                    "mean": standardizer.mean,
                    "std": standardizer.std,
                    "patch_mode": mode if extractor.is_myna else None,
                    "layer": layer,
                    "pooling": probe_args.pooling,
                    "task": spec.to_dict(),
                    "model_identity": extractor.identity,
                },
                partial,
            )
    tsne_path = None
    if report_args.tsne and spec.problem_type == SINGLE_LABEL:
        test = splits["test"]
        means = data.test_x.numpy()
        track_means = np.zeros((len(test.track_ids), means.shape[1]))
        np.add.at(track_means, test.track_index, means)
        track_means /= np.bincount(test.track_index, minlength=len(test.track_ids)).clip(min=1)[:, None]
        tsne_path = plot_tsne(
            track_means,
            np.asarray(test.labels),
            spec.label_names,
            os.path.join(task_dir, "tsne_test.png"),
            f"{spec.name}: test embeddings ({mode if layer is None else f'{mode}, layer {layer}'})",
            seed=probe_args.seed,
            num_threads=model_args.num_threads,
        )
    best = {candidate: select_best(grid).valid_score for candidate, grid in grids.items()}
    entry = {
        "task": spec.to_dict(),
        "patch_mode": mode,
        "layer": "last" if layer is None else layer,
        "pooling": probe_args.pooling,
        "chosen_config": asdict(chosen.config),
        "valid_score": chosen.valid_score,
        "best_epoch": chosen.best_epoch,
        "validation_metrics": valid_metrics,
        "test_metrics": test_metrics,
        "best_valid_score_by_patch_mode": {m: max(v for (cm, _), v in best.items() if cm == m) for m in modes},
        # --layers last: {mode: [probe, ...]}, as before --layers; otherwise {mode: {layer: [probe, ...]}}.
        "grid": {
            m: [r.to_dict() for r in grids[(m, None)]]
            if layers is None
            else {str(i): [r.to_dict() for r in grids[(m, i)]] for i in layers}
            for m in modes
        },
        "num_tracks": {s: len(splits[s].track_ids) for s in SPLITS},
        "num_chunks": {s: int(len(splits[s].track_index)) for s in SPLITS},
        "skipped_tracks": {s: splits[s].skipped for s in SPLITS},
        "linear_probe": linear_path,
        "tsne": tsne_path,
        "seconds": {"extraction": extracted - started, "probes": time.perf_counter() - extracted},
    }
    if layers is not None:
        entry["best_valid_score_by_layer"] = {m: {str(i): best[(m, i)] for i in layers} for m in modes}
    return entry


def run(
    model_args: ModelArguments, task_args: TaskArguments, probe_args: ProbeArguments, report_args: ReportArguments
) -> dict:
    """The whole evaluation; returns the report dict (also written to `output_dir`)."""
    from myna_common.cli_support import check_device

    check_device(model_args.device)
    os.makedirs(report_args.output_dir, exist_ok=True)
    if model_args.num_threads:
        torch.set_num_threads(model_args.num_threads)
    if probe_args.protocol not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {list(PROTOCOLS)}, got {probe_args.protocol!r}.")
    check_protocol_arguments(probe_args)
    tasks = [t.strip() for t in task_args.tasks.split(",") if t.strip()]
    tasks += [f"custom:{f.strip()}" for f in (task_args.task_files or "").split(",") if f.strip()]
    paths = _parse_mapping(task_args.dataset_paths, "--dataset_paths")
    split_files = _parse_mapping(task_args.split_files, "--split_files")
    sizes = tuple(int(s) for s in task_args.synthetic_sizes.split(","))
    if len(sizes) != 3:
        raise ValueError(f"--synthetic_sizes needs three numbers train,valid,test, got {task_args.synthetic_sizes!r}.")
    # Load every task first, so that a missing dataset fails before any long extraction.
    loaded, corpus = {}, None
    for task in tasks:
        if task in SYNTHETIC_TASKS:
            corpus = corpus if corpus is not None else synthetic_splits(sizes, task_args.synthetic_duration)
            loaded[task] = load_synthetic_task(task, sizes, task_args.synthetic_duration, corpus=corpus)
        else:
            from myna_evaluation.tasks import load_task

            path = paths.get(task, paths.get(task.split("-")[0]))
            loaded[task] = load_task(task, path, layout=task_args.layout, split_file=split_files.get(task))
    extractor = load_extractor(model_args.model, device=model_args.device, batch_size=model_args.extraction_batch_size)
    layers = parse_layers(probe_args.layers, extractor.num_layers)  # a layer the model lacks fails here
    grid = PROTOCOLS[probe_args.protocol][probe_args.fast]
    line = protocol_line(grid, layers, extractor.num_layers, probe_args.pooling)
    model_name = model_args.model_name or os.path.basename(os.path.normpath(model_args.model))
    report = {
        "model": model_args.model if is_handcrafted(model_args.model) else os.path.abspath(model_args.model),
        "model_identity": extractor.identity,
        "model_name": model_name,
        "arguments": {**asdict(model_args), **asdict(task_args), **asdict(probe_args), **asdict(report_args)},
        "protocol": PROTOCOLS[probe_args.protocol][probe_args.fast],
        "probe_protocol": {
            "layers": probe_args.layers,
            "layers_probed": "last" if layers is None else layers,
            "num_layers": extractor.num_layers,
            "pooling": probe_args.pooling,
            "line": line,
        },
        "tasks": {},
    }
    table_inputs = {}
    # The overall ETA: each task's work taken as proportional to its clips (extraction, and probes that train on
    # their chunks), measured on the tasks done so far.
    work = {task: sum(len(dataset[s]) for s in SPLITS) for task, (_, dataset) in loaded.items()}
    print(f"probe.py: {len(loaded)} task(s) x {grid}; an ETA follows each task (--fast: 8 probes)", flush=True)
    started, done = time.perf_counter(), 0
    for position, (task, (spec, dataset)) in enumerate(loaded.items(), 1):
        entry = evaluate_task(spec, dataset, extractor, model_args, probe_args, report_args)
        report["tasks"][spec.name] = entry
        table_inputs[spec.name] = (spec, entry["test_metrics"])
        done += work[task]
        elapsed = time.perf_counter() - started
        left = sum(work.values()) - done
        eta = f", ETA {format_seconds(elapsed / done * left)}" if left and done else ""
        print(f"[{position}/{len(loaded)}] {spec.name} done in {format_seconds(sum(entry['seconds'].values()))} "
              f"({format_seconds(elapsed)} elapsed{eta})", flush=True)
    table = render_table(model_name, table_inputs, protocol=line)
    notes = column_notes(table_inputs)
    if notes:
        table += "\n\n" + notes
    report["table"] = table
    write_json(os.path.join(report_args.output_dir, "results.json"), report, indent=2)
    write_text(os.path.join(report_args.output_dir, "table.md"), table + "\n")
    return report


PROBE_OUTPUTS = ("results.json", "table.md", "embeddings")


def check_output_dir(report_args: ReportArguments, model: str) -> None:
    """Before any work: `output_dir` is new, or this command's (an evaluation of the same model: its embedding cache
    is reused and its results replaced); anything else needs `--overwrite_output_dir`, and music never."""
    from myna_common.cli_support import check_output_folder

    folder = report_args.output_dir
    state = check_output_folder(
        folder, overwrite=report_args.overwrite_output_dir, option="--output_dir",
        overwrite_flag="--overwrite_output_dir", what="evaluation",
        own=lambda path: any(os.path.exists(os.path.join(path, name)) for name in PROBE_OUTPUTS),
    )  # fmt: skip
    results = os.path.join(folder, "results.json")
    if state != "own" or report_args.overwrite_output_dir or not os.path.isfile(results):
        return
    try:
        with open(results, encoding="utf-8") as f:
            previous = json.load(f).get("model")
    except (OSError, ValueError, AttributeError):
        previous = None
    shown = model if is_handcrafted(model) else os.path.abspath(model)
    if previous is not None and previous != shown:
        raise ValueError(
            f"--output_dir {folder} holds the evaluation of another model ({previous}): choose a new folder, or pass "
            "--overwrite_output_dir to replace its results."
        )


def main(argv: list[str] | None = None) -> dict:
    from myna_common.cli_support import check_model_name

    model_args, task_args, probe_args, report_args = parse_arguments(argv)
    if not is_handcrafted(model_args.model):
        check_model_name(model_args.model)
    check_output_dir(report_args, model_args.model)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report = run(model_args, task_args, probe_args, report_args)
    for name, entry in report["tasks"].items():
        layer = "" if entry["layer"] == "last" else f" at layer {entry['layer']}"
        print(
            f"{name}: {entry['patch_mode']} embedding{layer}, {entry['chosen_config']} "
            f"(validation {entry['valid_score']:.4f}); "
            f"test {entry['test_metrics']}"
        )
    print(f"\nTest metrics x100 ({report['protocol']}), written to {report_args.output_dir}:\n")
    print(report["table"])
    return report


if __name__ == "__main__":
    sys.exit(run_cli(main, "probe.py"))
