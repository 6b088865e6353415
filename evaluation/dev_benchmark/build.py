"""Builds the real-audio development benchmark in one resumable command (`benchmarks/build_dev_benchmark.py`).

    <output>/
      manifest.json          settings, per-stage state, per-package hours, counts of what was dropped and why
      pretrain/<package>/    recorded game soundtracks, 16 kHz mono FLAC (`--dataset folder --data_dir` this)
      pretrain_files.csv     every music file found: kept or why not, its length, the loop cut
      tasks/audio/           rendered clips (16 kHz mono FLAC)
      tasks/clips.csv        every clip with all its labels and its split (by work)
      tasks/dev-*.yaml       the task files: custom:<output>/tasks/dev-key.yaml, ...
      scratch/               downloaded .debs, unpacked packages, analysis and parsed scores (cache)

The command line is `benchmarks/build_dev_benchmark.py` (it parses `BuildArguments` and calls `run`). Each stage
records itself in the manifest when it completes and is skipped on the next run; inside a stage every
output file is written to a temporary name and renamed, and files already there are kept, so a killed build
continues where it stopped. Items that cannot be read (a package apt does not know, an undecodable file, a score
music21 cannot parse, a failed render) are skipped and counted, never fatal.

The rooms: `arguments` (the options), `outputs` (manifest, in-place writes), `system_tools` (apt, FluidSynth and
the SoundFont), `pretrain_stage`, `tasks_stage`, `tasks_rerender` (the same clips through another SoundFont) and
`task_files`; this module runs the stages and re-exports their public names, so `build.decide`, `build.write_tasks`
and the like keep working.
"""

import json
import logging
import os
import time

from myna_common.atomic import write_text

from .arguments import BuildArguments, default_output, package_names
from .outputs import MANIFEST_VERSION, SAMPLING_RATE, Manifest, atomic_write_audio, folder_bytes, safe_name, write_csv
from .pretrain_stage import build_pretrain, decide, hours_table, output_name
from .system_tools import ensure_renderer
from .task_files import CLIP_COLUMNS, TASK_NAMES, clip_rows, task_files, write_tasks
from .tasks_rerender import build_tasks_from
from .tasks_stage import TUNE_FILES, assign_splits, build_tasks, plan_collection, select_pieces


logger = logging.getLogger(__name__)


def run(args: BuildArguments) -> dict:
    """Runs the stages `args.stages` asks for and returns their summaries (also in `<output>/manifest.json`)."""
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - {"pretrain", "tasks"})
    if unknown:
        raise ValueError(f"--stages {','.join(unknown)}: the stages are pretrain and tasks.")
    if args.clips_from and "tasks" not in stages:
        raise ValueError("--clips_from renders an existing benchmark's clips again: it needs the tasks stage.")
    args.output = os.path.abspath(os.path.expanduser(args.output))
    os.makedirs(args.output, exist_ok=True)
    manifest = Manifest(args.output)
    started = time.perf_counter()
    summary = {}
    if "pretrain" in stages:
        summary["pretrain"] = build_pretrain(args, manifest)
    if "tasks" in stages:
        summary["tasks"] = (build_tasks_from if args.clips_from else build_tasks)(args, manifest)
    sizes = {
        name: round(folder_bytes(os.path.join(args.output, name)) / 2**20, 1)
        for name in ("pretrain", "tasks", "scratch")
        if os.path.isdir(os.path.join(args.output, name))
    }
    manifest.data["size_mib"] = sizes
    manifest.data["last_run_seconds"] = round(time.perf_counter() - started, 1)
    write_text(manifest.path, json.dumps(manifest.data, indent=2) + "\n")
    print(f"\nBenchmark in {args.output} (MiB: {sizes}):")
    if "pretrain" in summary:
        print(
            f"  pre-training: --dataset folder --data_dir {summary['pretrain']['folder']} "
            f"({summary['pretrain']['hours']} h, {summary['pretrain']['files']} files)"
        )
    if "tasks" in summary:
        tasks = ",".join(f"custom:{p}" for p in summary["tasks"]["task_files"].values())
        print(f"  tasks ({summary['tasks']['clips']} clips): --tasks {tasks}")
    return summary


__all__ = [
    "BuildArguments",
    "CLIP_COLUMNS",
    "MANIFEST_VERSION",
    "Manifest",
    "SAMPLING_RATE",
    "TASK_NAMES",
    "TUNE_FILES",
    "assign_splits",
    "atomic_write_audio",
    "build_pretrain",
    "build_tasks",
    "build_tasks_from",
    "clip_rows",
    "decide",
    "default_output",
    "ensure_renderer",
    "folder_bytes",
    "hours_table",
    "output_name",
    "package_names",
    "plan_collection",
    "run",
    "safe_name",
    "select_pieces",
    "task_files",
    "write_csv",
    "write_tasks",
]
