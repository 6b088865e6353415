"""Writing a file in place without ever leaving half of it: write under a temporary name, then `os.replace`.

Every module of this project that writes a file someone may read while it is being written (a JSON record, a cached
array, a matched audio segment, a checkpoint folder) goes through here. The temporary name is unique per call (the
process id and a random suffix), so two threads or processes writing the same path never share one: the last
`os.replace` wins, and each reader sees a whole file from one writer or the other.

    with atomic_path("out/result.json") as partial:
        write_something(partial)                 # any writer that takes a path
    write_json("out/result.json", {"a": 1})      # the common case

Light on purpose: imports nothing of this project, nor numpy or torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any


def temporary_name(path: str, suffix: str = "") -> str:
    """A name beside `path` that no other writer uses: `<path>.<pid>-<random>.tmp<suffix>`. `suffix` keeps an
    extension that a writer insists on (`np.save` appends `.npy`, soundfile picks the format from it)."""
    return f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", makedirs: bool = True) -> Iterator[str]:
    """Yields a temporary path to write `path`'s new content to (a file, or a folder); on a clean exit it replaces
    `path` in one rename. On an error the temporary file or folder is removed and `path` is left as it was.

    A folder that already exists at `path` is removed first (`os.replace` cannot replace a non-empty folder); a
    reader may then briefly find no folder, never half of one."""
    path = os.fspath(path)
    if makedirs:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = temporary_name(path, suffix)
    try:
        yield partial
        if os.path.isdir(partial) and os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(partial, path)
    except BaseException:
        if os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """`text` to `path` (UTF-8), whole or not at all."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        f.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`data` to `path`, whole or not at all."""
    with atomic_path(path) as partial, open(partial, "wb") as f:
        f.write(data)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2, default=None, **kwargs) -> None:
    """`value` as JSON to `path`, whole or not at all (`default` and other `json.dump` options pass through)."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent, default=default, **kwargs)


__all__ = ["atomic_path", "temporary_name", "write_bytes", "write_json", "write_text"]
