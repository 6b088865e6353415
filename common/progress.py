"""Progress bars that leave a clean log: a tqdm bar on a terminal, plain lines in a file or a pipe.

tqdm redraws its bar with carriage returns and cursor movements (`\\r`, `ESC[A`): on a terminal that is a bar, in a
log file it is debris. `progress_bar(...)` takes tqdm's arguments and returns a tqdm bar when the stream is a
terminal, and otherwise a `LineProgress`, which has the same methods and prints one plain line now and then
(`desc: 40/100 probes (40%), 1m12s elapsed, ETA 1m48s`) and one at the end. `quiet_library_bars()` turns the
libraries' own bars off for a command's whole run; `transformers_bars_off()` only for a block (a library call that
loads a model), restoring them after.
"""

import contextlib
import os
import sys
import time


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    """`"42s"`, `"3m05s"`, `"1h02m"`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class LineProgress:
    """The subset of tqdm's interface the project uses, written as plain lines (at most one per `interval`
    seconds, and one when closed) for logs. `disable=True` makes it silent."""

    def __init__(self, total=None, desc: str = "", unit: str = "it", initial=0, disable: bool = False,
                 file=None, interval: float | None = None, **_ignored):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.disable, self.file = disable, file
        self.interval = float(os.environ.get("MYNA_PROGRESS_INTERVAL", 30)) if interval is None else interval
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.initial = initial
        self.closed = False
        self.printed = None  # the count of the last line written

    # tqdm's interface
    def update(self, n=1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._print()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, s: str = "", refresh=True) -> None:
        self.postfix = s

    def set_description(self, desc: str = "", refresh=True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def write(self, message: str, file=None, **_ignored) -> None:
        print(message, file=file or self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed and self.n != self.initial and self.n != self.printed:
            self._print()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):  # pragma: no cover (not used as an iterator wrapper here)
        raise TypeError("LineProgress wraps no iterable: call update().")

    def _units(self) -> str:
        """`"files"` for 12 files, `"file"` for 1; units that are not plain words (`"audio s"`, `"it"`) stay."""
        word = self.unit.strip()
        if self.total == 1 or not word.isalpha() or word == "it" or word.endswith("s"):
            return word
        return word + "s"

    def _print(self) -> None:
        self.last, self.printed = time.monotonic(), self.n
        if self.disable:
            return
        elapsed = self.last - self.started
        done = f"{self.n:g}" if isinstance(self.n, float) else str(self.n)
        text = f"{self.desc}: {done}"
        if self.total:
            text += f"/{self.total:g} {self._units()} ({100 * self.n / self.total:.0f}%)"
            rate = (self.n - self.initial) / elapsed if elapsed > 0 else 0
            eta = (self.total - self.n) / rate if rate > 0 else None
            text += f", {format_seconds(elapsed)} elapsed"
            text += f", ETA {format_seconds(eta)}" if eta is not None else ""
        else:
            text += f" {self.unit}, {format_seconds(elapsed)} elapsed"
        if self.postfix:
            text += f" [{self.postfix}]"
        print(text, file=self.file or sys.stderr, flush=True)


def quiet_library_bars(always: bool = False, datasets: bool = True) -> bool:
    """Turns off the progress bars of transformers ("Loading weights", "Writing model shards"), huggingface_hub and
    (with `datasets`) datasets' `.map` when stderr is not a terminal (or `always`): in a log they are debris. A bar
    that stays (datasets' `.map` with `datasets=False`: hours of preprocessing need one) redraws at most every 30 s
    when tqdm is imported after this call (`TQDM_MININTERVAL`). Returns whether it did anything."""
    if not always and is_terminal():
        return False
    os.environ.setdefault("TQDM_MININTERVAL", "30")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    if datasets:
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        if "datasets" in sys.modules and hasattr(sys.modules["datasets"], "disable_progress_bars"):
            sys.modules["datasets"].disable_progress_bars()
    elif "HF_DATASETS_DISABLE_PROGRESS_BARS" not in os.environ:
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "0"  # datasets follows the hub's switch otherwise
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    return True


@contextlib.contextmanager
def transformers_bars_off():
    """Inside the block, transformers draws no progress bar ("Loading weights", ...); afterwards the bars are as
    they were. A tqdm hook (`transformers.utils.logging.set_tqdm_hook`) rather than `disable_progress_bar()`,
    which would also switch huggingface_hub's bars, process-wide, and could not say how to restore them. A
    transformers without the hook draws its bars as before."""
    from transformers.utils import logging as hf_logging

    if not hasattr(hf_logging, "set_tqdm_hook"):
        yield
        return
    previous = hf_logging.set_tqdm_hook(lambda _factory, args, kwargs: hf_logging.EmptyTqdm(*args, **kwargs))
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


def progress_bar(*args, file=None, **kwargs):
    """A tqdm bar on a terminal (`file`, stderr by default), a `LineProgress` otherwise; tqdm's arguments."""
    if is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(*args, file=file, **kwargs)
    return LineProgress(*args, file=file, **kwargs)


__all__ = [
    "LineProgress",
    "format_seconds",
    "is_terminal",
    "progress_bar",
    "quiet_library_bars",
    "transformers_bars_off",
]
