"""The options of `benchmarks/build_dev_benchmark.py` (`BuildArguments`): where to build, which stages, and the
settings of each. Light: parsed before anything heavy loads."""

import os
from dataclasses import dataclass, field

from . import scores, soundtracks


def default_output() -> str:
    """`$XDG_CACHE_HOME/myna-hf/dev-benchmark` (`~/.cache/...` by default): data stays out of the repository."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "myna-hf", "dev-benchmark")


@dataclass
class BuildArguments:
    output: str = field(default_factory=default_output, metadata={"help": "Where the benchmark is built."})
    stages: str = field(default="pretrain,tasks", metadata={"help": "Comma list of stages to run: pretrain, tasks."})
    package_set: str = field(
        default="soundtracks14",
        metadata={
            "help": "Named set of Debian packages with recorded music: soundtracks14 (14 h, the set results so far "
            "used) or wide (more packages).",
            "choices": list(soundtracks.PACKAGE_SETS),
        },
    )
    packages: str | None = field(
        default=None, metadata={"help": "Comma list of Debian packages with recorded music, instead of --package_set."}
    )
    min_seconds: float = field(default=30.0, metadata={"help": "Music files shorter than this are jingles."})
    collections: str = field(
        default=",".join(scores.COLLECTIONS), metadata={"help": "Comma list of music21 corpus folders (classes)."}
    )
    clips_per_class: int = field(default=200, metadata={"help": "Rendered clips per collection (about)."})
    pieces_per_class: int = field(default=100, metadata={"help": "Pieces drawn per collection at most."})
    clip_seconds: float = field(default=10.0, metadata={"help": "Seconds per rendered clip."})
    tempo_range: str = field(default="60,160", metadata={"help": "Rendering tempi, quarter notes per minute."})
    max_families: int = field(default=3, metadata={"help": "Instrument families per clip at most."})
    fractions: str = field(default="0.7,0.15,0.15", metadata={"help": "train,validation,test share, split by work."})
    seed: int = field(default=0, metadata={"help": "Seed of the piece draw, the clip plans and the split."})
    soundfont: str | None = field(default=None, metadata={"help": "SoundFont; fluid-soundfont-gm's FluidR3_GM."})
    clips_from: str | None = field(
        default=None,
        metadata={
            "help": "An existing benchmark folder: the tasks stage renders its clips again (same pieces, excerpts, "
            "tempi, instruments, labels, splits; the task options are its manifest's) through --soundfont."
        },
    )
    render_batch: int = field(default=48, metadata={"help": "Clips per FluidSynth call."})
    workers: int = field(default=2, metadata={"help": "Processes for decoding and rendering."})
    install: bool = field(
        default=False,
        metadata={
            "help": "apt-get install what is missing (fluidsynth, the SoundFont's package); without it a missing "
            "tool stops the build with the command that installs it."
        },
    )
    keep_scratch: bool = field(
        default=False, metadata={"help": "Keep unpacked packages and decoded audio (the .debs are always kept)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})


def package_names(args: BuildArguments) -> list[str]:
    """The Debian packages of the pre-training stage: `--packages` when given, else those of `--package_set`."""
    if args.packages:
        return [p.strip() for p in args.packages.split(",") if p.strip()]
    return list(soundtracks.PACKAGE_SETS[args.package_set])


__all__ = ["BuildArguments", "default_output", "package_names"]
