"""Myna in everyday use: the `music-embedding` pipeline, Myna audio classification, streaming audio, the CLI.

Importing `modeling_myna`, or any name of this package (`from myna_pipelines import MusicEmbeddingPipeline`),
registers the `music-embedding` task with `transformers.pipeline` (model class `AutoModel`, so any Myna folder
works: pre-training, bare encoder or classifier):

    >>> import modeling_myna
    >>> from transformers import pipeline
    >>> embed = pipeline("music-embedding", model="path/to/myna-base")
    >>> embed(["a.wav", "b.mp3"])  # one (384,) array per track

The names are loaded on first use (PEP 562), so that `import myna_pipelines` alone imports neither torch nor
transformers: the command line (`myna embed | convert | info`, in `myna_pipelines.cli`) parses its arguments and
answers `--help` before loading them.
"""

import importlib


# name -> the module that defines it
_NAMES = {
    "POOLING_MODES": "music_embedding",
    "TASK": "music_embedding",
    "MusicEmbeddingPipeline": "music_embedding",
    "MynaAudioClassificationPipeline": "audio_classification",
    "AudioSegment": "streaming",
    "audio_blocks": "streaming",
    "segment_audio": "streaming",
    "segment_chunks": "streaming",
    "stream_segments": "streaming",
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    importlib.import_module(f"{__name__}.music_embedding")  # registers the task
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_NAMES))


__all__ = sorted(_NAMES)
