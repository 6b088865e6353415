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
    """An argparse parser whose unknown options get a "did you mean" from the known ones."""

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
    [true|false]`, and `--no_flag` when it defaults to true) without importing transformers."""
    kwargs.setdefault("formatter_class", HelpFormatter)
    parser = CommandParser(**kwargs)
    for cls in classes:
        group = parser.add_argument_group(cls.__name__) if len(classes) > 1 else parser
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
    "check_device",
    "check_unknown_options",
    "debug_requested",
    "did_you_mean",
    "option_strings",
    "run_cli",
]
