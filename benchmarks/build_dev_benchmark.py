"""Builds the real-audio development benchmark, offline (Debian's archive and the music21 corpus are the only
sources) and resumable: rerun the same command after an interruption.

    python benchmarks/build_dev_benchmark.py      # into ~/.cache/myna-hf/dev-benchmark (--output to choose)
    python benchmarks/build_dev_benchmark.py --stages tasks --clips_per_class 50   # the labelled tasks only, smaller

Writes `<output>/pretrain/` (recorded game soundtracks, 16 kHz mono FLAC: `training/pretrain.py --dataset folder
--data_dir <output>/pretrain`) and `<output>/tasks/dev-{key,composer,instruments,tempo}.yaml` (`evaluation/probe.py
--tasks custom:<output>/tasks/dev-key.yaml,...`). What it holds and how it is made: `myna_evaluation.dev_benchmark`
and docs/dev-benchmark.md. Needs `pip install -e ".[bench]"`, and for the tasks FluidSynth and a SoundFont: a
missing one stops the build with the apt-get command that installs it, which `--install` runs.
"""

import logging
import sys

from myna_common.cli_support import dataclass_parser, parse_into, run_cli


def main(argv: list[str] | None = None) -> dict:
    from myna_evaluation.dev_benchmark.build import BuildArguments, run

    parser = dataclass_parser(
        BuildArguments,
        prog="build_dev_benchmark.py",
        description="Build the real-audio development benchmark (Debian soundtracks for pre-training; music21 "
        "scores rendered with FluidSynth for the labelled tasks), offline and resumable. --debug (or MYNA_DEBUG=1) "
        "shows tracebacks.",
    )
    args = parse_into(parser, BuildArguments, sys.argv[1:] if argv is None else argv)[0]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(run_cli(main, "build_dev_benchmark.py"))
