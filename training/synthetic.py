"""The generated music corpus, kept importable here, where it lived first (`from myna_training.synthetic import
generate_clip`): it moved to `myna_common.synthetic`, the floor every package may import (docs/architecture.md).
Importing it stays light: numpy only."""

from myna_common import synthetic as _moved
from myna_common.synthetic import *  # noqa: F401, F403
from myna_common.synthetic import __all__  # noqa: F401


def __getattr__(name: str):
    return getattr(_moved, name)  # the names outside `__all__` too
