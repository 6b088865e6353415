"""Shared by the app's tests: a tiny generated library (music in two folders with tags, a store with timelines, an
index), clips cut from its tracks on the store's 3 s chunk boundaries, and a free port to serve the app on."""

import os
import socket

import numpy as np
import soundfile as sf

from myna_training.synthetic import generate_clip

from .pipelines_support import save_tiny_model


CHUNK_SAMPLES = 96 * 512  # one chunk of the tiny model at 16 kHz: 96 frames of 512 samples, 3.072 s
RATE = 16_000
TRACK_SECONDS = 4 * CHUNK_SAMPLES / RATE + 0.1  # four chunks


def write_music(folder, count: int = 8) -> list[str]:
    """`count` generated tracks of four chunks, alternately in `jazz/` and `rock/`, each folder with a
    `metadata.csv` (`file_name`, `style`, `tempo`) as `write_synthetic_folder` writes it."""
    paths, rows = [], {"jazz": [], "rock": []}
    for i in range(count):
        genre = ("jazz", "rock")[i % 2]
        os.makedirs(os.path.join(folder, genre), exist_ok=True)
        audio, labels = generate_clip([21, i], duration=TRACK_SECONDS, sampling_rate=RATE, style=i % 5)
        path = os.path.join(folder, genre, f"song{i}.wav")
        sf.write(path, audio, RATE, subtype="FLOAT")
        paths.append(path)
        rows[genre].append(f"song{i}.wav,{labels['style']},{labels['tempo']}")
    for genre, lines in rows.items():
        with open(os.path.join(folder, genre, "metadata.csv"), "w") as f:
            f.write("file_name,style,tempo\n" + "\n".join(lines) + "\n")
    return paths


def make_library(root, count: int = 8, timeline: bool = True, variant: str = "base") -> dict:
    """A tiny model, `count` tracks, their store (with timelines) and index under `root`."""
    from myna_pipelines.library import embed_library
    from myna_pipelines.search import build_index

    root = str(root)
    model = save_tiny_model(os.path.join(root, "model"), variant=variant)
    paths = write_music(os.path.join(root, "music"), count)
    store, index = os.path.join(root, "store"), os.path.join(root, "index")
    embed_library([os.path.join(root, "music")], store, model, timeline=timeline, num_workers=0, progress=False)
    build_index(store, index)
    return {"root": root, "model": model, "paths": paths, "store": store, "index": index}


def cut_clip(source: str, path: str, first_chunk: int = 1, chunks: int = 3) -> tuple[str, float]:
    """Writes `chunks` chunks of `source` from chunk `first_chunk` on to `path`; returns it and its start second."""
    audio, rate = sf.read(source, dtype="float32")
    chunk = CHUNK_SAMPLES * rate / RATE  # a chunk is 3.072 s at any rate
    start, stop = round(first_chunk * chunk), round((first_chunk + chunks) * chunk)
    sf.write(path, audio[start:stop], rate, subtype="FLOAT")
    return path, start / rate


def write_not_audio(path: str) -> str:
    """A text file with an audio file's name: what a wrong upload looks like to the server."""
    with open(path, "w") as f:
        f.write("track list\n1. intro\n2. outro\n")
    return path


def write_short_clip(path: str, seconds: float = 1.0) -> str:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), RATE, subtype="FLOAT")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
