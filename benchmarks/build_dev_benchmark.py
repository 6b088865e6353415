"""Builds the real-audio development benchmark, offline (Debian's archive and the music21 corpus are the only
sources) and resumable: rerun the same command after an interruption.

    python benchmarks/build_dev_benchmark.py --output /work/data/myna-dev
    python benchmarks/build_dev_benchmark.py --stages tasks --clips_per_class 50   # the labelled tasks only, smaller

Writes `<output>/pretrain/` (recorded game soundtracks, 16 kHz mono FLAC: `training/pretrain.py --dataset folder
--data_dir <output>/pretrain`) and `<output>/tasks/dev-{key,composer,instruments,tempo}.yaml` (`evaluation/probe.py
--tasks custom:<output>/tasks/dev-key.yaml,...`). What it holds and how it is made: `myna_evaluation.dev_benchmark`
and the README section "A real-audio development benchmark". Needs `pip install -e ".[bench]"`; FluidSynth and the
SoundFont are apt-installed when missing (`--no_install` to only say so).
"""

import sys


if __name__ == "__main__":
    from myna_pipelines.cli_support import run_cli

    from myna_evaluation.dev_benchmark.build import main

    sys.exit(run_cli(main, "build_dev_benchmark.py"))
