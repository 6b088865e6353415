"""Hand-crafted audio features as "models" of the probe table: `--model handcrafted:logmel`, `handcrafted:chroma`,
`handcrafted:all`.

They are what a user would otherwise reach for, computed with librosa, and go through the same chunking as a Myna
checkpoint (Myna-Base's `chunk_frames` windows of the 16 kHz, hop-512 frame grid, half-chunk hops for training,
none for validation and test), the same probe grid and the same selection on validation, so that one table
compares them with Myna on any task. Frame features:

- `logmel`: the 128-band log-mel spectrogram (Myna's own front-end settings: n_fft 2048, hop 512), 20 MFCCs and
  their deltas: 168 per frame;
- `chroma`: the 12-bin constant-Q chroma (`librosa.feature.chroma_cqt`, hop 512): 12 per frame;
- `all`: the two concatenated (180 per frame).

Each chunk is pooled over its frames as a Myna chunk is over its tokens (probe.py's `--pooling`, for every row
alike): `mean` (the default), the mean over time (168, 12, 180 values); `meanstd`, the mean and the standard
deviation over time `[mean ; std]` (336, 24, 360: the vectors these baselines had before `--pooling` existed).
Hand-crafted features have one "layer": `layers="all"` gives `(chunks, 1, F)`.

Frame features are computed once per recording and pooled over each chunk's frames (running sums), so chunk `k`
holds exactly the statistics of frames `[k * hop, k * hop + chunk_frames)`.
"""

import hashlib
import json

import numpy as np

from modeling_myna.configuration_myna import HOP_LENGTH, N_FFT, N_MELS, SAMPLING_RATE, VARIANTS, chunk_frames_for


PREFIX = "handcrafted:"
FEATURE_SETS = ("logmel", "chroma", "all")
N_MFCC = 20
FEATURE_VERSION = 2  # 2: pooling is chosen (`mean` alone by default); 1 was always [mean ; std]


def is_handcrafted(model: str) -> bool:
    return str(model).startswith(PREFIX)


def frame_features(audio: np.ndarray, kind: str, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """`(frames, F)` frame-level features on the centred hop-512 grid (`1 + len(audio) // 512` frames)."""
    import librosa

    blocks = []
    if kind in ("logmel", "all"):
        mel = librosa.feature.melspectrogram(
            y=audio, sr=sampling_rate, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, power=2.0
        )
        log_mel = librosa.power_to_db(mel, ref=1.0, top_db=None)  # absolute level: loudness is information
        mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
        width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))
        delta = librosa.feature.delta(mfcc, width=width) if width >= 3 else np.zeros_like(mfcc)
        blocks += [log_mel, mfcc, delta]
    if kind in ("chroma", "all"):
        blocks.append(librosa.feature.chroma_cqt(y=audio, sr=sampling_rate, hop_length=HOP_LENGTH))
    frames = min(b.shape[1] for b in blocks)
    return np.concatenate([b[:, :frames] for b in blocks]).T.astype(np.float64)


def chunk_statistics(features: np.ndarray, chunk_frames: int, hop_frames: int, pooling: str = "mean") -> np.ndarray:
    """`(chunks, F)` mean (`pooling="mean"`), or `(chunks, 2F)` mean and standard deviation (`"meanstd"`), of each
    window of `chunk_frames` frames every `hop_frames` (the windows of `Tensor.unfold`: the tail that fills no window
    is dropped)."""
    if pooling not in ("mean", "meanstd"):
        raise ValueError(f"--pooling {pooling}: expected mean or meanstd.")
    count = (len(features) - chunk_frames) // hop_frames + 1
    if count < 1:
        raise ValueError(f"{len(features)} frames hold no {chunk_frames}-frame chunk: pad the audio to one chunk.")
    sums = np.vstack([np.zeros((1, features.shape[1])), np.cumsum(features, 0)])
    starts = np.arange(count) * hop_frames
    mean = (sums[starts + chunk_frames] - sums[starts]) / chunk_frames
    if pooling == "mean":
        return mean.astype(np.float32)
    squares = np.vstack([np.zeros((1, features.shape[1])), np.cumsum(features**2, 0)])
    variance = (squares[starts + chunk_frames] - squares[starts]) / chunk_frames - mean**2
    return np.concatenate([mean, np.sqrt(np.clip(variance, 0, None))], 1).astype(np.float32)


class HandcraftedExtractor:
    """The `EmbeddingExtractor` interface (`embed`, `chunk_frames`, `identity`, ...) over librosa features.

    Args:
        name: `handcrafted:logmel`, `handcrafted:chroma` or `handcrafted:all`.
    """

    is_myna = False
    patch_mode = None

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 64):
        import librosa

        kind = name[len(PREFIX) :] if is_handcrafted(name) else name
        if kind not in FEATURE_SETS:
            raise ValueError(
                f"--model {name}: unknown hand-crafted feature set {kind!r}; use "
                f"{', '.join(PREFIX + k for k in FEATURE_SETS)}."
            )
        self.kind = kind
        self.model_path = PREFIX + kind
        self.sampling_rate = SAMPLING_RATE
        self.chunk_frames = chunk_frames_for(VARIANTS["base"])  # windows as long as a Myna-Base chunk
        self.min_samples = (self.chunk_frames - 1) * HOP_LENGTH  # the least audio whose centred grid fills a chunk
        description = {"kind": kind, "librosa": librosa.__version__, "version": FEATURE_VERSION, "n_mfcc": N_MFCC}
        digest = hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()
        self.identity = f"handcrafted-{digest[:16]}"

    @property
    def patch_modes(self) -> list[str]:
        return ["default"]

    num_layers = 1

    def default_hop(self) -> int:
        return max(1, self.chunk_frames // 2)

    def embed(
        self, audios: list[np.ndarray], hop_frames: int, layers: str = "last", pooling: str = "mean"
    ) -> list[np.ndarray]:
        """One `(num_chunks, D)` float32 array per recording (mono, 16 kHz); `(num_chunks, 1, D)` for
        `layers="all"`."""
        if layers not in ("last", "all"):
            raise ValueError(f"layers={layers!r}: expected 'last' or 'all'.")
        out = []
        for audio in audios:
            audio = np.asarray(audio, dtype=np.float32)
            if len(audio) < self.min_samples:
                audio = np.pad(audio, (0, self.min_samples - len(audio)))
            stats = chunk_statistics(frame_features(audio, self.kind), self.chunk_frames, hop_frames, pooling)
            out.append(stats[:, None] if layers == "all" else stats)
        return out


__all__ = ["FEATURE_SETS", "HandcraftedExtractor", "chunk_statistics", "frame_features", "is_handcrafted"]
