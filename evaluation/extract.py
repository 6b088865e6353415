"""Frozen chunk embeddings of a task's splits, cached on disk and resumable.

Chunking follows SPEC §5: a track's mel spectrogram is cut into `chunk_frames` windows, every `train_hop_frames`
frames for the training split (overlapping crops give the probe more examples) and without overlap for validation and
test (the official track embedding). Any folder `AutoModel` loads works: Myna folders through `MynaFeatureExtractor`;
other transformers audio models (bonus) through their own feature extractor on raw-audio windows of the same
duration, mean-pooling `last_hidden_state`. A hybrid Myna model is embedded once in `"both"` mode; its square and
vertical embeddings are the two halves (`split_patch_modes`).

What is pooled (`ExtractionSettings.layers`, `.pooling`; MARBLE's probing chooses the layer on validation):
- `layers="last"` (the paper's): one `(D,)` embedding per chunk, the pooled output of the last block after the final
  LayerNorm (Myna's `pooler_output`). `layers="all"`: `(num_layers, D)` per chunk from ONE forward with
  `output_hidden_states=True`: index 0 is the embedding layer's output (tokens plus positions, before any block),
  1..N-1 the blocks' outputs, and the last index the `"last"` embedding itself, so that a choice over all layers
  includes the paper's.
- `pooling="mean"`: the mean over the chunk's time steps (Myna: its tokens); `"meanstd"`: that mean and the
  population standard deviation, concatenated `[mean ; std]` (for a hybrid, per patch mode:
  `[square mean ; square std ; vertical mean ; vertical std]`, so the two halves are still the two modes).

The cache key hashes the model (config and weight files), the split, the audio (source, ids, paths; not the
labels, so tasks over the same clips share embeddings), the chunking, and the layers and pooling when they are not
the defaults (so a default cache written before those options existed, the same bytes, is still found). Shards of
`tracks_per_shard` tracks are written as they finish, so an interrupted extraction resumes where it stopped. Audio
that does not decode is skipped and counted, never fatal.
"""

import glob
import hashlib
import json
import logging
import os
import zipfile
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from myna_common.atomic import atomic_path, write_json
from myna_common.progress import progress_bar

from modeling_myna.audio_utils import AudioDecodeError, load_audio
from modeling_myna.configuration_myna import HOP_LENGTH, SAMPLING_RATE, VARIANTS, chunk_frames_for

from .tasks import TaskSpec, column, dataset_signature


logger = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
CACHE_VERSION = 1
LAYER_CHOICES = ("last", "all")  # what is extracted; a list of layer indices extracts "all" and the probe picks
POOLINGS = ("mean", "meanstd")


@dataclass
class ExtractionSettings:
    """How chunks are cut and embedded. `train_hop_frames` defaults to half a chunk."""

    train_hop_frames: int | None = None
    batch_size: int = 64
    tracks_per_shard: int = 64
    device: str = "cpu"
    cache_dir: str | None = None
    progress: bool = True
    layers: str = "last"  # "last": (num_chunks, D); "all": (num_chunks, num_layers, D), from one forward
    pooling: str = "mean"  # "mean" or "meanstd" over each chunk's time steps


def check_extraction_protocol(layers: str, pooling: str) -> None:
    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers={layers!r}: expected one of {list(LAYER_CHOICES)}.")
    if pooling not in POOLINGS:
        raise ValueError(f"--pooling {pooling}: expected one of {', '.join(POOLINGS)}.")


def pool_tokens(
    states: torch.Tensor, lengths: list[int], pooling: str, means: torch.Tensor | None = None
) -> torch.Tensor:
    """Pools `(B, sum(lengths), D)` states over time, per segment (a hybrid's square tokens, then its vertical ones).

    Returns `(B, len(lengths) * D)` means, or for `"meanstd"` `(B, len(lengths) * 2 * D)` as
    `[mean_1 ; std_1 ; mean_2 ; std_2 ...]` (population std, as the hand-crafted statistics). `means`, when given,
    are the segments' means already computed (`pooler_output`), used as they are so that the mean part is the same
    bytes as the model's own pooled output.
    """
    segments = states.split(lengths, dim=1)
    if means is None:
        mean_parts = [segment.mean(dim=1) for segment in segments]
    else:
        mean_parts = list(means.split(states.shape[-1], dim=-1))
    if pooling == "mean":
        return torch.cat(mean_parts, dim=-1)
    return torch.cat([t for m, s in zip(mean_parts, segments) for t in (m, s.std(dim=1, correction=0))], dim=-1)


@dataclass
class SplitEmbeddings:
    """Chunk embeddings of one split. `track_index[i]` is the row in `track_ids`/`labels` of chunk `i`."""

    embeddings: np.ndarray  # (num_chunks, D) float32, or (num_chunks, num_layers, D) for layers="all"
    track_index: np.ndarray  # (num_chunks,) int64
    track_ids: list[str]
    labels: list
    skipped: list[str] = field(default_factory=list)

    def track_means(self) -> np.ndarray:
        """`(num_tracks, D)` (or `(num_tracks, num_layers, D)`) mean chunk embedding per track."""
        sums = np.zeros((len(self.track_ids), *self.embeddings.shape[1:]), dtype=np.float64)
        np.add.at(sums, self.track_index, self.embeddings)
        counts = np.bincount(self.track_index, minlength=len(self.track_ids)).clip(min=1)
        return (sums / counts.reshape(-1, *[1] * (sums.ndim - 1))).astype(np.float32)


def file_sha256(path: str, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def model_identity(model_path: str) -> str:
    """Hash of a saved model folder: its `config.json` and weight files' contents."""
    if not os.path.isdir(model_path):
        raise FileNotFoundError(
            f"{model_path} is not a model folder: pass a folder written by save_pretrained (config.json + weights)."
        )
    digest = hashlib.sha256()
    files = [os.path.join(model_path, "config.json")]
    files += sorted(
        {p for name in WEIGHT_FILES for p in glob.glob(os.path.join(model_path, name.replace(".", "*.", 1)))}
    )
    for path in files:
        if os.path.isfile(path):
            digest.update(os.path.basename(path).encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:24]


class EmbeddingExtractor:
    """Loads a model folder once and embeds tracks chunk by chunk.

    Args:
        model_path: a folder `AutoModel.from_pretrained` loads (a Myna folder, or another audio model with a
            feature extractor).
        device: where the model and the mel spectrogram run.
        batch_size: chunks per forward.
    """

    def __init__(self, model_path: str, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        import modeling_myna  # noqa: F401  registers Myna with the Auto classes

        self.model_path = model_path
        self.identity = model_identity(model_path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        config = AutoConfig.from_pretrained(model_path)
        self.is_myna = config.model_type == "myna"
        self.model = AutoModel.from_pretrained(model_path).to(self.device).eval()
        if self.is_myna:
            from modeling_myna import MynaFeatureExtractor

            self.feature_extractor = MynaFeatureExtractor.from_config(self.model.config)
            self.chunk_frames = self.model.config.chunk_frames
            self.patch_mode = (
                "both" if len(self.model.config.patch_sizes) > 1 else self.model.config.default_patch_mode
            )
        else:
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_path)
            self.chunk_frames = chunk_frames_for(VARIANTS["base"])  # windows as long as a Myna-Base chunk
            self.patch_mode = None
        self.sampling_rate = int(self.feature_extractor.sampling_rate)

    @property
    def patch_modes(self) -> list[str]:
        """The embeddings this model offers: one, or square, vertical and both for a hybrid Myna."""
        if self.is_myna and len(self.model.config.patch_sizes) > 1:
            return self.model.config.available_patch_modes
        return [self.patch_mode or "default"]

    @property
    def num_layers(self) -> int:
        """How many embeddings `layers="all"` gives per chunk: the embedding layer and one per block."""
        return getattr(self.model.config, "num_hidden_layers", 0) + 1

    def default_hop(self) -> int:
        return max(1, self.chunk_frames // 2)

    def _token_lengths(self, input_values: torch.Tensor | None, num_tokens: int) -> list[int]:
        """Tokens per tokenizer in a forward of `input_values` `(B, n_mels, frames)`: one entry, two for `"both"`."""
        if not (self.is_myna and self.patch_mode == "both"):
            return [num_tokens]
        grids = [t.grid_size(*input_values.shape[1:]) for t in self.model.embeddings.patch_embeddings]
        return [height * width for height, width in grids]

    def _pool(self, output, input_values: torch.Tensor | None, layers: str, pooling: str, means: torch.Tensor):
        """`(B, W)` for `"last"`, `(B, num_layers, W)` for `"all"` (see the module docstring)."""
        lengths = self._token_lengths(input_values, output.last_hidden_state.shape[1])
        last = pool_tokens(output.last_hidden_state, lengths, pooling, means)
        if layers == "last":
            return last
        # hidden_states[-1] is the last block before the final LayerNorm: the "last" embedding stands in its place.
        return torch.stack([*(pool_tokens(h, lengths, pooling) for h in output.hidden_states[:-1]), last], dim=1)

    @torch.no_grad()
    def embed(
        self, audios: list[np.ndarray], hop_frames: int, layers: str = "last", pooling: str = "mean"
    ) -> list[np.ndarray]:
        """One `(num_chunks, D)` float32 array per recording (mono, at `self.sampling_rate`); `(num_chunks,
        num_layers, D)` for `layers="all"`. `D` doubles for `pooling="meanstd"`."""
        check_extraction_protocol(layers, pooling)
        default = layers == "last" and pooling == "mean"
        if self.is_myna:
            features = self.feature_extractor(
                audios,
                sampling_rate=self.sampling_rate,
                hop_frames=hop_frames,
                return_tensors="pt",
                device=self.device,
            )
            chunks, audio_index = features["input_values"], features["audio_index"].cpu()
            pooled = []
            for batch in chunks.split(self.batch_size):
                batch = batch.to(self.device)
                per_layer = {"output_hidden_states": True} if layers == "all" else {}
                output = self.model(batch, patch_mode=self.patch_mode, **per_layer)
                if default:  # the paper's embedding, exactly as before these options
                    pooled.append(output.pooler_output.float().cpu())
                else:
                    pooled.append(self._pool(output, batch, layers, pooling, output.pooler_output).float().cpu())
        else:
            # Myna frames (HOP_LENGTH samples at SAMPLING_RATE) to samples at this model's rate.
            window = self.chunk_frames * HOP_LENGTH * self.sampling_rate // SAMPLING_RATE
            hop = hop_frames * HOP_LENGTH * self.sampling_rate // SAMPLING_RATE
            windows, index = [], []
            for i, audio in enumerate(audios):
                audio = np.pad(audio, (0, max(0, window - len(audio))))
                starts = range(0, len(audio) - window + 1, hop)
                windows += [audio[s : s + window] for s in starts]
                index += [i] * len(starts)
            audio_index = torch.tensor(index)
            pooled = []
            for start in range(0, len(windows), self.batch_size):
                inputs = self.feature_extractor(
                    windows[start : start + self.batch_size], sampling_rate=self.sampling_rate, return_tensors="pt"
                ).to(self.device)
                if default:
                    pooled.append(self.model(**inputs).last_hidden_state.mean(1).float().cpu())
                    continue
                output = self.model(**inputs, output_hidden_states=layers == "all")
                means = output.last_hidden_state.mean(1)
                pooled.append(self._pool(output, None, layers, pooling, means).float().cpu())
        embeddings = torch.cat(pooled).numpy()
        return [embeddings[(audio_index == i).numpy()] for i in range(len(audios))]


def load_extractor(model: str, device: str = "cpu", batch_size: int = 64):
    """The extractor for `--model`: `handcrafted:<set>` gives librosa features (`handcrafted.py`), anything else
    a model folder."""
    from .handcrafted import HandcraftedExtractor, is_handcrafted

    if is_handcrafted(model):
        return HandcraftedExtractor(model, device=device, batch_size=batch_size)
    return EmbeddingExtractor(model, device=device, batch_size=batch_size)


def split_patch_modes(embeddings: np.ndarray, hidden_size: int, modes: list[str]) -> dict[str, np.ndarray]:
    """A hybrid model's `"both"` embeddings `[square ; vertical]` (`(..., 2 * hidden_size)`, any leading axes: chunks,
    layers) as one array per requested mode. With `"meanstd"` pooling each mode is `2 * D` wide: pass that."""
    halves = {
        "square": embeddings[..., :hidden_size],
        "vertical": embeddings[..., hidden_size:],
        "both": embeddings,
    }
    return {mode: halves[mode] for mode in modes}


def cache_key(
    extractor: EmbeddingExtractor,
    spec: TaskSpec,
    split: str,
    signature: str,
    hop_frames: int,
    layers: str = "last",
    pooling: str = "mean",
) -> str:
    description = {
        "version": CACHE_VERSION,
        "model": extractor.identity,
        "source": spec.source,
        "split": split,
        "data": signature,
        "patch_mode": extractor.patch_mode,
        "chunk_frames": extractor.chunk_frames,
        "hop_frames": hop_frames,
    }
    # Only when not the defaults: the default key is the one written before these options (the same embeddings).
    if layers != "last":
        description["layers"] = layers
    if pooling != "mean":
        description["pooling"] = pooling
    return hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()[:20]


def _decode(example, sampling_rate: int, name: str) -> np.ndarray:
    audio, _ = load_audio(example, sampling_rate=sampling_rate)
    return audio


def _read_shard(path: str, num_tracks: int) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """A cached shard's `(embeddings, track_index, ids, ok)`, or `None` (after a warning) when it is unreadable.

    Shards are written atomically, but a disk error or a copied cache can still leave a truncated or foreign file;
    such a shard is recomputed rather than fatal.
    """
    try:
        with np.load(path, allow_pickle=False) as shard:
            embeddings, track_index, ok = shard["embeddings"], shard["track_index"], shard["ok"]
            ids = [str(i) for i in shard["ids"]]
        if len(ids) != num_tracks or len(ok) != num_tracks or len(track_index) != len(embeddings):
            raise ValueError(f"it holds {len(ids)} tracks and {len(embeddings)} chunks, not {num_tracks} tracks")
        if len(track_index) and not (0 <= track_index.min() and track_index.max() < num_tracks):
            raise ValueError("its track_index points outside the shard")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        logger.warning("recomputing the unreadable embedding shard %s (%s: %s)", path, type(error).__name__, error)
        return None
    return embeddings, track_index, ids, ok


def extract_split(
    extractor: EmbeddingExtractor, spec: TaskSpec, dataset, split: str, settings: ExtractionSettings
) -> SplitEmbeddings:
    """Embeds every track of `dataset` (one split of a task), resuming from cached shards when there are some."""
    check_extraction_protocol(settings.layers, settings.pooling)
    hop = (settings.train_hop_frames or extractor.default_hop()) if split == "train" else extractor.chunk_frames
    signature = dataset_signature(spec, dataset)
    cache = None
    if settings.cache_dir:
        key = cache_key(extractor, spec, split, signature, hop, settings.layers, settings.pooling)
        cache = os.path.join(settings.cache_dir, f"{split}-{key}")
        os.makedirs(cache, exist_ok=True)
        write_json(
            os.path.join(cache, "settings.json"),
            {
                "model_path": os.path.abspath(extractor.model_path),
                "model": extractor.identity,
                "task": spec.name,
                "split": split,
                "hop_frames": hop,
                "data": signature,
                "settings": asdict(settings),
            },
            indent=2,
        )

    num_tracks = len(dataset)
    shard_size = max(1, settings.tracks_per_shard)
    embeddings, track_index, track_ids, labels, skipped = [], [], [], [], []
    bar = progress_bar(total=num_tracks, desc=f"{spec.name}/{split}", unit="track", disable=not settings.progress)
    for start in range(0, num_tracks, shard_size):
        stop = min(start + shard_size, num_tracks)
        shard_path = os.path.join(cache, f"shard_{start:07d}.npz") if cache else None
        cached = _read_shard(shard_path, stop - start) if shard_path and os.path.isfile(shard_path) else None
        if cached is not None:
            shard_embeddings, shard_index, shard_ids, shard_ok = cached
        else:
            rows = dataset.select(range(start, stop))
            shard_ids = [str(i) for i in column(rows, "id")]
            audios, shard_ok = [], np.zeros(len(rows), dtype=bool)
            # numpy format: generated audio arrives as arrays, not lists of Python floats.
            for position, example in enumerate(rows.with_format("numpy")["audio"]):
                try:
                    audios.append(_decode(example, extractor.sampling_rate, shard_ids[position]))
                    shard_ok[position] = True
                except (AudioDecodeError, ValueError) as error:
                    logger.warning("skipping %s/%s track %s: %s", spec.name, split, shard_ids[position], error)
            per_track = extractor.embed(audios, hop, settings.layers, settings.pooling) if audios else []
            good = np.flatnonzero(shard_ok)
            shard_embeddings = (np.concatenate(per_track) if per_track else np.zeros((0, 0), np.float32)).astype(
                np.float32
            )
            shard_index = (
                np.concatenate([np.full(len(e), good[i]) for i, e in enumerate(per_track)])
                if per_track
                else np.zeros(0, np.int64)
            )
            if shard_path:
                with atomic_path(shard_path, suffix=".npz") as partial:  # np.savez appends .npz otherwise
                    np.savez(
                        partial, embeddings=shard_embeddings, track_index=shard_index, ids=np.array(shard_ids),
                        ok=shard_ok,
                    )  # fmt: skip
        shard_labels = column(dataset.select(range(start, stop)), "label")
        remap = {}
        for position, track_id in enumerate(shard_ids):
            if shard_ok[position]:
                remap[position] = len(track_ids)
                track_ids.append(track_id)
                labels.append(shard_labels[position])
            else:
                skipped.append(track_id)
        if len(shard_embeddings):
            embeddings.append(shard_embeddings)
            track_index.append(np.array([remap[int(i)] for i in shard_index], dtype=np.int64))
        bar.update(stop - start)
    bar.close()
    if skipped:
        logger.warning(
            "%s/%s: skipped %d of %d tracks whose audio could not be read", spec.name, split, len(skipped), num_tracks
        )
    if not track_ids:
        raise RuntimeError(
            f"{spec.name}/{split}: no track could be decoded ({num_tracks} tried); check the audio files."
        )
    return SplitEmbeddings(np.concatenate(embeddings), np.concatenate(track_index), track_ids, labels, skipped)


__all__ = [
    "EmbeddingExtractor",
    "ExtractionSettings",
    "SplitEmbeddings",
    "LAYER_CHOICES",
    "POOLINGS",
    "extract_split",
    "load_extractor",
    "model_identity",
    "pool_tokens",
    "split_patch_modes",
]
