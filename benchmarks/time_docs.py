"""How long the commands of the documentation take, measured on the machine at hand: writes `docs/timings.md`, the one
table the README and the pages quote times from (tests never time anything).

    python benchmarks/time_docs.py                                  # every row but the long ones
    python benchmarks/time_docs.py --only smoke-pretrain,tour-probe  # some rows; the table keeps the others
    python benchmarks/time_docs.py --long                           # also the full probe grid and the ablation sweep
    python benchmarks/time_docs.py --list                           # the rows, their commands, nothing run

Each command runs as a user runs it, with this Python's environment first on the PATH (run it from the activated
`.venv`): `make demo` and `make test` in the repository (`make install` runs first, untimed: it does nothing when the
environment is up to date, so the row is the job itself, not the installation), every other command in a scratch
folder (`--workdir`, else a new temporary one) laid out as the README's tour leaves a clone: `training/` and
`evaluation/` linked to the repository's, the tour's generated music (untimed), and `outputs/myna-pretrain` linked
to the model `make demo` wrote. Rows run in the table's order, so a row finds what the rows before it made (the
smoke model for `tour-probe`, the probe for `export`); with `--only`, what a row needs must be there already.

For each row: the wall-clock time; the CPU time of the command and everything it waited for (user + system: on a
machine shared with other jobs, the steadier figure); the 1-minute load average before and after (above the number of
cores, other jobs were competing for the CPU and the wall time is longer than a quiet machine's); the cores this
process may use; the date. A command that fails is recorded as failed, with its exit status.
"""

import argparse
import datetime
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(ROOT, "docs", "timings.md")
PRETRAIN = "accelerate launch -q --config_file training/accelerate.yaml training/pretrain.py"
SYNTHETIC_TASKS = "synthetic-key,synthetic-tempo,synthetic-tags,synthetic-style"

# The README tour's music (its first Python block), made before the tour's rows, untimed.
TOUR_MUSIC = """
from myna_training.synthetic import generate_clip, write_synthetic_folder
import soundfile as sf

audio, labels = generate_clip(0, key="A minor", tempo=120.0, style="jazz")
sf.write("song.flac", audio, 16_000)
write_synthetic_folder("music/", 8, audio_format="flac")
"""


@dataclass(frozen=True)
class Step:
    """One row: `command` is the shell command as the documentation writes it; `where` is "repository" or "scratch"."""

    id: str
    command: str
    page: str  # where the documentation gives it
    where: str = "scratch"
    long: bool = False


STEPS = [
    Step("make-demo", "make demo", "README.md", where="repository"),
    Step("embed-file", "myna embed song.flac --model outputs/myna-pretrain/model --output song.npz", "README.md"),
    Step(
        "embed-folder",
        "myna embed music/ --model outputs/myna-pretrain/model --output library/ --timeline",
        "README.md",
    ),
    Step("index", "myna index library/ --output library-index/", "README.md"),
    Step("search", "myna search library-index/ song.flac -k 3 --segments", "README.md"),
    Step("app-prepare", "myna app --index library-index/ --prepare", "README.md"),
    Step("smoke-pretrain", f"{PRETRAIN} --config training/configs/cpu-smoke.yaml", "README.md"),
    Step(
        "tour-probe",
        "python evaluation/probe.py --model outputs/myna-smoke/model --fast --tasks synthetic-style "
        "--output_dir outputs/eval-smoke",
        "README.md",
    ),
    Step(
        "fast-probe",
        f"python evaluation/probe.py --model outputs/myna-pretrain/model --fast --tasks {SYNTHETIC_TASKS} "
        "--output_dir outputs/eval",
        "docs/evaluation.md",
    ),
    Step(
        "export",
        "python evaluation/export.py --model outputs/myna-pretrain/model --probe "
        "outputs/eval/synthetic-style/linear_probe.pt --output_dir myna-style",
        "docs/evaluation.md",
    ),
    Step(
        "handcrafted-probe",
        "python evaluation/probe.py --model handcrafted:all --fast --tasks synthetic-key,synthetic-style "
        "--output_dir outputs/eval-handcrafted",
        "docs/evaluation.md",
    ),
    Step(
        "finetune",
        "python training/finetune.py --model_name_or_path outputs/myna-pretrain/model --task synthetic-style",
        "docs/finetuning.md",
    ),
    Step("make-test", "make test", "README.md", where="repository"),
    Step(
        "full-probe",
        f"python evaluation/probe.py --model outputs/myna-pretrain/model --tasks {SYNTHETIC_TASKS} "
        "--output_dir outputs/eval-full",
        "docs/evaluation.md",
        long=True,
    ),
    Step("ablate-default", "python training/ablate.py", "docs/masking.md", long=True),
]
COLUMNS = ["row", "command", "wall", "CPU", "load before -> after", "cores", "date"]


@dataclass
class Timing:
    wall: float
    cpu: float
    load_before: float
    load_after: float
    cores: int
    date: str
    returncode: int = 0


def cores() -> int:
    """The cores this process may run on (its affinity), which is what a command it starts gets."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def measure(command: str, cwd: str, env: dict | None = None) -> Timing:
    """Runs `command` with bash in `cwd`, its output passed through; wall and CPU seconds (user + system of the
    command and every process it waited for), the 1-minute load average before and after."""
    load_before = os.getloadavg()[0]
    date = datetime.datetime.now().isoformat(timespec="minutes")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    returncode = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, check=False).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    return Timing(wall, cpu, load_before, os.getloadavg()[0], cores(), date, returncode)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def table_row(step: Step, timing: Timing | None) -> str:
    """A row; its first cell carries the anchor the pages link to (`timings.md#make-demo`), which the strict build of
    the site checks."""
    name, command = f'<span id="{step.id}"></span>`{step.id}`', f"`{step.command}`"
    if timing is None:
        cells = [name, command, "not measured yet", "", "", "", ""]
    else:
        wall = duration(timing.wall) if timing.returncode == 0 else f"failed (exit {timing.returncode})"
        load = f"{timing.load_before:.1f} -> {timing.load_after:.1f}"
        cells = [name, command, wall, duration(timing.cpu), load, str(timing.cores), timing.date]
    return "| " + " | ".join(cells) + " |"


def read_rows(path: str) -> dict[str, str]:
    """The rows of an earlier table, by id, as they were written."""
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {m[1]: m[0] for m in re.finditer(r'^\| <span id="([\w-]+)"></span>.*\|$', f.read(), re.MULTILINE)}


def busy(row: str) -> bool:
    """Whether a measured row ran with a load above its cores (before or after)."""
    cells = [c.strip() for c in row.strip("|").split("|")]
    load, cores_cell = cells[4], cells[5]
    if not load or not cores_cell:
        return False
    return max(float(x) for x in load.split(" -> ")) > int(cores_cell)


def write_table(path: str, rows: dict[str, str], steps: list[Step] = STEPS) -> str:
    """Writes the table: one row per step, in order, from `rows` (by id) or "not measured yet"."""
    lines = [rows.get(step.id) or table_row(step, None) for step in steps]
    measured = [row for row in lines if "not measured yet" not in row]
    if not measured:
        state = "Not measured yet on any machine: run `python benchmarks/time_docs.py` on a quiet one."
    else:
        loaded = sum(busy(row) for row in measured)
        state = (
            f"{len(measured)} of {len(lines)} rows measured"
            + (f"; {loaded} of them while other jobs loaded the machine (load above its cores): their wall times are "
               "longer than a quiet machine's, and CPU is the figure to compare" if loaded else ", on a quiet machine")
            + (". Rows not measured yet: run `python benchmarks/time_docs.py --only ROW`."
               if len(measured) < len(lines) else ".")
        )  # fmt: skip
    text = "\n".join(
        [
            "# Timings",
            "",
            "<!-- written by benchmarks/time_docs.py: run it again rather than editing this table -->",
            "",
            "How long the commands of the README and these pages take, measured by `python benchmarks/time_docs.py`,",
            "which runs each as a user does (its docstring says how) and writes this page. The pages quote times",
            "only from here; run it on your machine for yours. *Wall*: wall-clock time. *CPU*: user + system time",
            "of the command and every process it waited for; on a machine shared with other jobs it is the steadier",
            "figure. *Load*: the 1-minute load average before and after; above the number of *cores*, other jobs",
            "were competing for the CPU. `make test` runs after `make install` has installed everything.",
            "",
            state,
            "",
            f"Machine: {machine()}.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---|---|---:|---:|---|---:|---|",
            *lines,
            "",
        ]
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {cores()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def prepare_scratch(workdir: str, env: dict) -> None:
    """The clone as the README's tour leaves it: the scripts' folders, the demo's model, the tour's music."""
    for folder in ("training", "evaluation"):
        link = os.path.join(workdir, folder)
        if not os.path.lexists(link):
            os.symlink(os.path.join(ROOT, folder), link)
    model, link = os.path.join(ROOT, "outputs", "myna-pretrain"), os.path.join(workdir, "outputs", "myna-pretrain")
    os.makedirs(os.path.dirname(link), exist_ok=True)
    if os.path.isdir(model) and not os.path.lexists(link):
        os.symlink(model, link)
    if not os.path.exists(os.path.join(workdir, "music")):
        subprocess.run([sys.executable, "-c", TOUR_MUSIC], cwd=workdir, env=env, check=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated rows to run (the table keeps the others)")
    parser.add_argument("--long", action="store_true", help="also the long rows (" + ", ".join(
        s.id for s in STEPS if s.long) + ")")  # fmt: skip
    parser.add_argument("--workdir", help="scratch folder for the commands (default: a new temporary folder)")
    parser.add_argument("--output", default=TABLE, help="the table to write (default: docs/timings.md)")
    parser.add_argument("--list", action="store_true", help="print the rows and their commands, run nothing")
    args = parser.parse_args(argv)
    known = {s.id for s in STEPS}
    if args.only:
        unknown = [name for name in args.only.split(",") if name not in known]
        if unknown:
            parser.error(
                f"--only names {', '.join(unknown)}, which are not rows; the rows: {', '.join(sorted(known))}"
            )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.only:
        chosen = args.only.split(",")
        steps = [s for s in STEPS if s.id in chosen]
    else:
        steps = [s for s in STEPS if args.long or not s.long]
    if args.list:
        for step in steps:
            print(f"{step.id:18} {step.where:10} {step.command}")
        return 0
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    workdir = args.workdir or tempfile.mkdtemp(prefix="myna-time-docs-")
    os.makedirs(workdir, exist_ok=True)
    rows, failed = read_rows(args.output), []
    for step in steps:
        if step.where == "scratch":
            prepare_scratch(workdir, env)
        if step.where == "repository" and step.command.startswith("make "):
            subprocess.run(["make", "install"], cwd=ROOT, env=env, check=True)  # untimed: a no-op once installed
        cwd = ROOT if step.where == "repository" else workdir
        print(f"time_docs: {step.id}: {step.command}  (in {cwd})", flush=True)
        timing = measure(step.command, cwd, env)
        rows[step.id] = table_row(step, timing)
        if timing.returncode:
            failed.append(step.id)
        print(f"time_docs: {step.id}: {rows[step.id]}", flush=True)
        write_table(args.output, rows)  # after every row, so a killed run keeps what it measured
    write_table(args.output, rows)
    print(f"time_docs: wrote {args.output} (scratch folder: {workdir})")
    if failed:
        print(f"time_docs: failed: {', '.join(failed)} ({shlex.join(sys.argv)})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
