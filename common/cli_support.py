"""What every Myna command shares: a user's mistake as one clear line, a traceback only on request, and a
"did you mean" for a mistyped option.

Standard library only, so that a command can parse its arguments (and answer `--help`) before importing torch or
transformers. Used by `myna` (`cli.py`), `training/pretrain.py`, `evaluation/probe.py`, `evaluation/export.py` and
the checkpoint converter. `--debug` on any of them, or `MYNA_DEBUG=1` in the environment, shows the traceback.
"""

import argparse
import dataclasses
import difflib
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable


DEBUG_FLAG = "--debug"
DEBUG_ENV = "MYNA_DEBUG"


class UsageError(ValueError):
    """A mistake in what the user gave (an option, a path, a device); the message says what to do instead."""


def debug_requested(argv: Iterable[str] = ()) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def without_debug_flag(argv: list[str]) -> list[str]:
    return [a for a in argv if a != DEBUG_FLAG]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`" Did you mean 'x'?"` for the closest of `choices`, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def option_strings(parser) -> list[str]:
    """Every `--option` an argparse parser accepts."""
    return [s for action in parser._actions for s in action.option_strings if s.startswith("--")]


def options_given(parser, argv: list[str]) -> list[argparse.Action]:
    """The actions of the `--options` that `argv` sets, each once, as argparse resolves them (an unambiguous
    prefix counts): what the user asked for, told apart from a default of the same value."""
    known = {s: action for action in parser._actions for s in action.option_strings if s.startswith("--")}
    given: list[argparse.Action] = []
    for argument in argv:
        if argument == "--":
            break
        flag = argument.split("=", 1)[0]
        if not flag.startswith("--"):
            continue
        matches = [flag] if flag in known else [s for s in known if s.startswith(flag)]
        actions = {id(known[s]): known[s] for s in matches}
        if len(actions) == 1:
            action = next(iter(actions.values()))
            if action not in given:
                given.append(action)
    return given


def check_unknown_options(parser, argv: list[str], see: str = "--help") -> None:
    """Raises `UsageError` for the first `--option` in `argv` that `parser` does not know (nor abbreviates), with
    the closest known option. Checked before parsing, so a typo is not reported as a missing required option."""
    known = option_strings(parser)
    for argument in argv:
        flag = argument.split("=", 1)[0]
        if flag.startswith("--") and not any(option.startswith(flag) for option in known):
            raise UsageError(f"unknown option {flag}.{did_you_mean(flag, known) or f' See {see} for the options.'}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the `None` of required options and of options whose help explains their default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An argparse parser whose unknown options get a "did you mean" from the known ones, and whose errors are one
    line (argparse prints its usage block first; `--help` is there for that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        try:  # first, so that a typo is not reported as a missing required option
            check_unknown_options(self, args)
        except UsageError as error:
            self.error(str(error))
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unexpected argument(s) {' '.join(unknown)}. See --help.")
        return namespace


def _to_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if value.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}.")


def dataclass_parser(*classes, **kwargs) -> CommandParser:
    """An argparse parser with one `--option` per field of the dataclasses `classes`, as `HfArgumentParser` makes
    them (type, default, help; `Literal` gives choices; a field without default is required; a bool is `--flag
    [true|false]`, and `--no_flag` when it defaults to true) without importing transformers. A class with an
    `_argument_group_name` (as `HfArgumentParser` reads it) gets a group of that title in `--help`; of several
    classes, the others are grouped under their class names."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    parser = CommandParser(**kwargs)
    for cls in classes:
        title = getattr(cls, "_argument_group_name", None) or (cls.__name__ if len(classes) > 1 else None)
        group = parser.add_argument_group(title) if title else parser
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            options = dict(f.metadata)
            if typing.get_origin(kind) in (typing.Union, types.UnionType):
                kind = next(a for a in typing.get_args(kind) if a is not type(None))  # X | None
            if f.default is not dataclasses.MISSING:
                options["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                options["default"] = f.default_factory()
            else:
                options["required"] = True
            if kind is bool:
                options.update(type=_to_bool, nargs="?", const=True, metavar="true|false")
            elif typing.get_origin(kind) is typing.Literal:
                options["choices"] = list(typing.get_args(kind))
            elif "choices" not in options:
                options["type"] = kind
            aliases = options.pop("aliases", [])  # as HfArgumentParser: extra option strings, e.g. ["-k"]
            group.add_argument(f"--{f.name}", *aliases, **options)
            if kind is bool and f.default is True:
                group.add_argument(f"--no_{f.name}", action="store_false", dest=f.name, help=f"Turn off --{f.name}.")
    return parser


def parse_into(parser: argparse.ArgumentParser, classes, argv: list[str]):
    """One instance of each dataclass in `classes` (or of the one class), then a namespace of the other arguments."""
    namespace = vars(parser.parse_args(argv))
    classes = classes if isinstance(classes, (tuple, list)) else (classes,)
    outputs, used = [], set()
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        outputs.append(cls(**{k: v for k, v in namespace.items() if k in names}))
        used |= names
    return (*outputs, argparse.Namespace(**{k: v for k, v in namespace.items() if k not in used}))


# Exceptions that carry a message written for the user: wrong input, missing files or models (the Hub's errors are
# OSErrors), a missing optional package, a failed upload. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)


def run_cli(main: Callable[[list[str]], object], prog: str, argv: list[str] | None = None) -> int:
    """Runs `main(argv)` (without `--debug`) and returns an exit status: 0, 1 for an error reported in one line on
    stderr (`prog: error: ...`), 130 when interrupted. With `--debug` or `MYNA_DEBUG=1` errors raise as they are."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    try:
        result = main(without_debug_flag(argv))
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted.", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if debug:
            raise
        message = str(error).strip() or type(error).__name__
        first = message.splitlines()[0] if not isinstance(error, (ValueError, UsageError)) else message
        print(f"{prog}: error: {first}", file=sys.stderr)
        print(f"(for the traceback: rerun with {DEBUG_FLAG}, or set {DEBUG_ENV}=1)", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def syntax_error_message(path: str, error: Exception) -> str:
    """One line for a YAML or JSON file that does not parse: `"f.yaml is not valid YAML (line 3, column 7: mapping
    values are not allowed here)"`, from PyYAML's marks (with where its context began when that is another line)
    or `json.JSONDecodeError`'s position."""
    kind = "JSON" if type(error).__name__ == "JSONDecodeError" else "YAML"
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or getattr(error, "msg", None) or str(error).strip().splitlines()[0]
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        # The cause is often where the context began: a key without its colon is noticed only on the next line.
        context += f" at line {context_mark.line + 1}, column {context_mark.column + 1}"
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: "
    elif getattr(error, "lineno", None) is not None:
        where = f"line {error.lineno}, column {error.colno}: "
    else:
        where = ""
    return f"{path} is not valid {kind} ({where}{problem}{f', {context}' if context else ''})"


def plural(count: int, word: str, many: str | None = None) -> str:
    """`"1 file"`, `"2 files"`, `"0 files"` (`many` for irregular plurals)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


# ------------------------------------------------------------------------------------------- output folders

# Audio files by extension: modeling_myna.audio_utils.AUDIO_EXTENSIONS, written out (standard library only here;
# tests/test_pipelines_cli.py checks that they agree).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")


def audio_files_in(folder: str, limit: int = 3, max_depth: int = 3) -> list[str]:
    """Up to `limit` audio files (by extension) in `folder` and its sub-folders down to `max_depth` levels: enough
    to tell a folder of music from an output folder, without walking a whole library."""
    found: list[str] = []
    root_depth = os.path.abspath(folder).rstrip(os.sep).count(os.sep)
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if os.path.abspath(root).rstrip(os.sep).count(os.sep) - root_depth >= max_depth:
            dirs[:] = []
        found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(AUDIO_SUFFIXES)]
        if len(found) >= limit:
            break
    return found[:limit]


def check_output_folder(
    path: str,
    *,
    overwrite: bool = False,
    own: Callable[[str], bool] | None = None,
    option: str = "--output",
    overwrite_flag: str = "--overwrite",
    what: str = "output",
    ignore: Iterable[str] = (),
) -> str:
    """What a command that writes the folder `path` may do there, before it does any work.

    Returns `"new"` (absent or empty), `"own"` (it holds this command's earlier output: `own(path)` is true; the
    command decides whether that continues or needs `overwrite_flag`) or `"overwrite"` (non-empty, not its own, and
    `overwrite` was given). Raises a one-line `UsageError` when `path` is a file, when it is a folder of audio (never
    written into, whatever the flags: a command could turn a music folder into its output), and when it is non-empty
    and not its own without `overwrite`. Entries named in `ignore` (a cache) do not make a folder non-empty.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path} is a file, not a folder: name a new folder for the {what}.")
    if not os.path.isdir(path):
        return "new"
    audio = audio_files_in(path)
    if audio:
        raise UsageError(
            f"{option} {path} holds audio ({', '.join(os.path.relpath(a, path) for a in audio[:2])}"
            f"{', ...' if len(audio) > 2 else ''}): the {what} never goes into a folder of music; name a new folder, "
            f"e.g. {option} {os.path.join(os.path.dirname(os.path.normpath(path)) or '.', 'myna-' + what.split()[0])}."
        )
    entries = sorted(n for n in os.listdir(path) if n not in set(ignore))
    if not entries:
        return "new"
    if own is not None and own(path):
        return "own"
    if overwrite:
        return "overwrite"
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    raise UsageError(
        f"{option} {path} is not empty ({shown}) and holds no {what} of this command: choose a new folder, or pass "
        f"{overwrite_flag} to write into it anyway."
    )


# ------------------------------------------------------------------------------------------- model names

# The released checkpoints (ghost-signal/myna) are .pth files, not Hub repositories: a folder by these names exists
# only after conversion.
RELEASED_NAMES = {"myna-base": "base", "myna-vertical": "vertical", "myna-hybrid": "hybrid"}
CONVERT_SECTION = "docs/convert.md"


def conversion_hint(name: str) -> str:
    """How to make the folder `name` when it names a released model; an empty string otherwise."""
    base = os.path.basename(os.path.normpath(name))
    variant = RELEASED_NAMES.get(base) or RELEASED_NAMES.get(base.removesuffix(".pth"))
    if variant is None:
        return ""
    stem = f"myna-{variant}"
    return (
        f" {stem} is a released checkpoint: download {stem}.pth (links in {CONVERT_SECTION}) and convert it first: "
        f"python -m modeling_myna.convert_original_checkpoint --checkpoint {stem}.pth --variant {variant} --output "
        f"{name if not name.endswith('.pth') else stem}"
    )


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hub's host answers a TCP connection within `timeout` seconds (no request is made)."""
    import socket
    import urllib.parse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _cached_on_hub(repo_id: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover (transformers depends on it)
        return False
    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001  (not a valid repo id)
        return False


def _nearby_model_names(name: str) -> list[str]:
    """What a mistyped model name may have meant: the folders beside where it points, and the released names."""
    parent = os.path.dirname(os.path.normpath(name))
    try:
        folders = [os.path.join(parent, entry.name) for entry in os.scandir(parent or ".") if entry.is_dir()]
    except OSError:
        folders = []
    return folders + ([] if parent else list(RELEASED_NAMES))


def check_model_name(name: str, option: str = "--model", reachable: Callable[[], bool] | None = None) -> str:
    """`name` when it is a folder, or a Hub id (`owner/name`) that is cached or can be fetched; otherwise a one-line
    `UsageError` at once, instead of the Hub client's retries (about half a minute when the Hub is unreachable):
    a missing folder is named as such, with the conversion command for the released names (myna-hybrid, ...)."""
    if os.path.isdir(name):
        return name
    hint = conversion_hint(name)
    given = f"{option} {name}" if option else name
    if os.path.exists(name):
        raise UsageError(f"{given} is a file, not a model folder.{hint or ' Pass the folder that holds config.json.'}")
    parts = name.split("/")
    looks_like_hub_id = len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not os.path.isabs(name)
    if hint or not looks_like_hub_id:
        advice = " Check the path (`make demo` writes outputs/myna-pretrain/model), or give a Hub id (owner/name)."
        suggestion = "" if hint else did_you_mean(name, _nearby_model_names(name))
        raise UsageError(f"{given}: no folder named {name} here ({os.getcwd()}).{suggestion or hint or advice}")
    if _cached_on_hub(name):
        return name
    if hub_offline():
        raise UsageError(
            f"{given}: no folder named {name} here, and it is not in the Hub cache while HF_HUB_OFFLINE is "
            "set: download it once with network access, or pass a local model folder."
        )
    if not (reachable or hub_reachable)():
        raise UsageError(
            f"{given}: no folder named {name} here, and the Hub cannot be reached to fetch it (no network?): "
            "pass a local model folder, or retry with network access."
        )
    return name


def check_device(name: str, option: str = "--device") -> str:
    """`name` if torch can use it here; a `UsageError` saying what is available otherwise. Imports torch."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"{option} {name}: not a device name; use cpu, cuda, cuda:1 or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if not torch.backends.cuda.is_built() else "none is visible"
            raise UsageError(f"{option} {name}: no CUDA device is available ({why}); use {option} cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"{option} {name}: there are {torch.cuda.device_count()} CUDA device(s), numbered from 0."
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option} {name}: MPS (Apple GPU) is not available here; use {option} cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        if not hasattr(torch, device.type) or not getattr(torch, device.type).is_available():
            raise UsageError(f"{option} {name}: {device.type} is not available here; use {option} cpu.")
    return name


__all__ = [
    "CommandParser",
    "HelpFormatter",
    "dataclass_parser",
    "parse_into",
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "USER_ERRORS",
    "UsageError",
    "AUDIO_SUFFIXES",
    "audio_files_in",
    "check_device",
    "check_model_name",
    "check_output_folder",
    "conversion_hint",
    "plural",
    "syntax_error_message",
    "check_unknown_options",
    "debug_requested",
    "did_you_mean",
    "option_strings",
    "options_given",
    "run_cli",
]
