"""What both stages of the development benchmark write with: `manifest.json` (a stage listed there is complete),
16 kHz FLAC and CSV files written under a temporary name and renamed, file names, progress bars."""

import csv
import io
import json
import os
import re

import numpy as np

from myna_common.atomic import atomic_path, write_text


MANIFEST_VERSION = 1
SAMPLING_RATE = 16_000


def atomic_write_audio(path: str, audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> None:
    """A 16-bit FLAC written under a temporary name and renamed, so a killed build never leaves half a file."""
    import soundfile as sf

    with atomic_path(path, suffix=".flac") as partial:
        sf.write(partial, np.clip(audio, -1, 1), sampling_rate, subtype="PCM_16", format="FLAC")


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """`rows` as CSV text with a header of `columns` (other keys left out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    write_text(path, csv_text(rows, columns))


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def progress_bar(iterable, enabled: bool, **kwargs):
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not enabled, **kwargs)


class Manifest:
    """`manifest.json`: the settings and each stage's summary; a stage listed there is complete."""

    def __init__(self, output: str):
        self.path = os.path.join(output, "manifest.json")
        self.data = {"version": MANIFEST_VERSION, "stages": {}}
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8") as f:
                self.data = json.load(f)

    def done(self, stage: str, settings: dict) -> bool:
        entry = self.data["stages"].get(stage)
        return bool(entry) and entry.get("settings") == settings

    def record(self, stage: str, settings: dict, summary: dict) -> None:
        self.data["stages"][stage] = {"settings": settings, **summary}
        write_text(self.path, json.dumps(self.data, indent=2) + "\n")


def folder_bytes(folder: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, n))
        for d, _, names in os.walk(folder)
        for n in names
        if os.path.isfile(os.path.join(d, n))
    )


__all__ = [
    "MANIFEST_VERSION",
    "Manifest",
    "SAMPLING_RATE",
    "atomic_write_audio",
    "csv_text",
    "folder_bytes",
    "progress_bar",
    "safe_name",
    "write_csv",
]
