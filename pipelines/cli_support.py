"""The command-line helpers, kept importable here, where they lived first: they moved to `myna_common.cli_support`,
the floor every package may import (docs/architecture.md)."""

from myna_common import cli_support as _moved
from myna_common.cli_support import *  # noqa: F401, F403
from myna_common.cli_support import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # the names outside `__all__` too
