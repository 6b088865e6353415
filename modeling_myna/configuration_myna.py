"""Myna configuration and the audio constants of the released checkpoints.

Myna (Yonay et al., arXiv 2502.12511, "Myna: Masking-Based Contrastive Learning of Musical
Representations") is a SimpleViT (Beyer et al. 2022) on raw power mel spectrograms. Every audio constant the
model and the feature extractor share is defined once, here.
"""

from transformers import PretrainedConfig


# Audio front end of the released checkpoints (SPEC §1; ghost-signal/myna example.py).
SAMPLING_RATE = 16_000  # Myna resamples everything to 16 kHz
N_FFT = 2048  # nnAudio MelSpectrogram default, used unchanged by the reference code
HOP_LENGTH = 512  # nnAudio MelSpectrogram default
N_MELS = 128  # `n_mels=128` in the reference code
CHUNK_SAMPLES = 50_000  # one model input, 3.125 s; the reference's N_SAMPLES

# Patch sizes (height = mel bins, width = frames) of the released variants (paper §3.2).
SQUARE_PATCH = [16, 16]
VERTICAL_PATCH = [N_MELS, 2]

VARIANTS = {
    "base": [SQUARE_PATCH],
    "vertical": [VERTICAL_PATCH],
    "hybrid": [SQUARE_PATCH, VERTICAL_PATCH],
}

# How a forward of a model with two tokenizers combines them: one of them, or both concatenated.
BOTH_PATCH_MODES = "both"


def frames_for_samples(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Frames of a centred STFT (nnAudio's default) over `num_samples` samples."""
    return num_samples // hop_length + 1


def chunk_frames_for(patch_sizes: list[list[int]], chunk_samples: int = CHUNK_SAMPLES) -> int:
    """Frames of one model input: the frames of `chunk_samples`, floored to a multiple of the primary patch width.

    98 frames for 50,000 samples, 96 for 16x16 and hybrid models, 98 for the vertical (128x2) model, as the
    reference's `get_n_frames` computes them.
    """
    patch_width = patch_sizes[0][1]
    return frames_for_samples(chunk_samples) // patch_width * patch_width


def patch_mode_name(patch_size: list[int], num_mel_bins: int) -> str:
    """`"vertical"` for a full-height strip, `"square"` otherwise (the paper's names)."""
    return "vertical" if patch_size[0] == num_mel_bins else "square"


class MynaConfig(PretrainedConfig):
    r"""
    Configuration of a [`MynaModel`]. The defaults give Myna-Base (ViT-S/16 on 128-bin mel spectrograms); use
    [`MynaConfig.from_variant`] for the released variants.

    Args:
        hidden_size (`int`, *optional*, defaults to 384):
            Width of the tokens and of the encoder.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 6):
            Attention heads per block.
        head_dim (`int`, *optional*, defaults to 64):
            Width of one attention head; `num_attention_heads * head_dim` is the attention's inner width.
        intermediate_size (`int`, *optional*, defaults to 1536):
            Width of the MLP of each block.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            MLP activation (exact GELU in the released models).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every LayerNorm.
        num_mel_bins (`int`, *optional*, defaults to 128):
            Mel bins of the input spectrogram (its height).
        patch_sizes (`list[list[int]]`, *optional*, defaults to `[[16, 16]]`):
            One or two `[height, width]` patch sizes. Each gets its own tokenizer; all share the encoder. The
            first is the primary one, which sets `chunk_frames`.
        chunk_frames (`int`, *optional*):
            Frames of one model input; defaults to 50,000 samples' worth floored to the primary patch width.
        default_patch_mode (`str`, *optional*):
            Tokenizer used when a forward does not name one: `"square"`, `"vertical"` or `"both"` (the
            concatenated embedding of a hybrid model). Defaults to `"both"` for two patch sizes, else the only one.
        projection_dim (`int`, *optional*, defaults to 128):
            Output width of the contrastive projection (`linear_head` of the reference code).
        mask_ratio (`float`, *optional*, defaults to 0.9):
            Fraction of patch tokens dropped from each view in pre-training.
        classifier_hidden_size (`int`, *optional*, defaults to 0):
            Hidden width of the audio-classification head: 0 for a linear head, else Linear -> ReLU -> Dropout ->
            Linear (the one-hidden-layer probe of JukeMIR).
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout of the hidden layer of that head.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear layers.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate the model was trained at.

    Example:

    ```python
    >>> from modeling_myna import MynaConfig, MynaModel

    >>> config = MynaConfig.from_variant("hybrid")
    >>> model = MynaModel(config)
    ```
    """

    model_type = "myna"

    def __init__(
        self,
        hidden_size: int = 384,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 6,
        head_dim: int = 64,
        intermediate_size: int = 1536,
        hidden_act: str = "gelu",
        layer_norm_eps: float = 1e-5,
        num_mel_bins: int = N_MELS,
        patch_sizes: list[list[int]] | None = None,
        chunk_frames: int | None = None,
        default_patch_mode: str | None = None,
        projection_dim: int = 128,
        mask_ratio: float = 0.9,
        classifier_hidden_size: int = 0,
        classifier_dropout: float = 0.0,
        initializer_range: float = 0.02,
        sampling_rate: int = SAMPLING_RATE,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.num_mel_bins = num_mel_bins
        # Lists, not tuples, so that a JSON round trip gives an equal config.
        self.patch_sizes = [list(p) for p in (patch_sizes if patch_sizes is not None else [SQUARE_PATCH])]
        self.chunk_frames = chunk_frames if chunk_frames is not None else chunk_frames_for(self.patch_sizes)
        self.projection_dim = projection_dim
        self.mask_ratio = mask_ratio
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        self.sampling_rate = sampling_rate
        self._validate_geometry()
        if default_patch_mode is None:
            default_patch_mode = BOTH_PATCH_MODES if len(self.patch_sizes) > 1 else self.patch_modes[0]
        self.default_patch_mode = default_patch_mode
        if default_patch_mode not in self.available_patch_modes:
            raise ValueError(
                f"default_patch_mode={default_patch_mode!r} is not one of this model's modes "
                f"{self.available_patch_modes}."
            )
        super().__init__(**kwargs)

    def _validate_geometry(self) -> None:
        if not 1 <= len(self.patch_sizes) <= 2 or any(len(p) != 2 for p in self.patch_sizes):
            raise ValueError(
                f"patch_sizes must hold one or two [height, width] pairs, got {self.patch_sizes}: "
                "use [[16, 16]] (square), [[128, 2]] (vertical) or both (hybrid)."
            )
        for height, width in self.patch_sizes:
            if height <= 0 or width <= 0 or self.num_mel_bins % height != 0:
                raise ValueError(
                    f"patch [{height}, {width}] does not tile {self.num_mel_bins} mel bins: the patch height must "
                    "divide num_mel_bins."
                )
        if len(set(self.patch_modes)) != len(self.patch_modes):
            raise ValueError(
                f"patch_sizes {self.patch_sizes} give two tokenizers of the same kind {self.patch_modes}; a hybrid "
                "model pairs one square patch with one vertical (full-height) patch."
            )
        if self.hidden_size % 4 != 0:
            raise ValueError(f"hidden_size must be a multiple of 4 for the 2D sin-cos embedding, got {self.hidden_size}.")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}.")
        if self.chunk_frames < self.patch_sizes[0][1]:
            raise ValueError(f"chunk_frames={self.chunk_frames} is narrower than one patch {self.patch_sizes[0]}.")

    @property
    def patch_modes(self) -> list[str]:
        """Name of each tokenizer, in the order of `patch_sizes`: `"square"` or `"vertical"`."""
        return [patch_mode_name(p, self.num_mel_bins) for p in self.patch_sizes]

    @property
    def available_patch_modes(self) -> list[str]:
        """Every value a forward's `patch_mode` accepts."""
        return self.patch_modes + ([BOTH_PATCH_MODES] if len(self.patch_sizes) > 1 else [])

    def embedding_size(self, patch_mode: str | None = None) -> int:
        """Width of the pooled embedding for `patch_mode` (twice `hidden_size` for `"both"`)."""
        patch_mode = patch_mode or self.default_patch_mode
        return self.hidden_size * (len(self.patch_sizes) if patch_mode == BOTH_PATCH_MODES else 1)

    @classmethod
    def from_variant(cls, variant: str, **kwargs) -> "MynaConfig":
        """The configuration of a released variant: `"base"` (16x16), `"vertical"` (128x2) or `"hybrid"` (both)."""
        if variant not in VARIANTS:
            raise ValueError(f"unknown Myna variant {variant!r}: choose one of {sorted(VARIANTS)}.")
        return cls(patch_sizes=VARIANTS[variant], **kwargs)


__all__ = ["MynaConfig"]
