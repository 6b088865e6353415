"""Myna configuration and the audio constants of the released checkpoints.

Myna (Yonay et al., arXiv 2502.12511, "Myna: Masking-Based Contrastive Learning of Musical
Representations") is a SimpleViT (Beyer et al. 2022) on raw power mel spectrograms. Every audio constant the
model and the feature extractor share is defined once, here.
"""

import math

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

# Encoder sizes by name (`--model_size`), shared by pre-training, fine-tuning and the converter. "small" is the
# project's CPU default; the ViT sizes follow Dosovitskiy et al. 2021 (Table 1) and DeiT-Ti (Touvron et al. 2021),
# all with 64-wide heads and an MLP 4x the width; "vit-s" is the paper's encoder (SPEC §2).
MODEL_SIZES = {
    "small": dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, head_dim=32, intermediate_size=512),
    "vit-t": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, head_dim=64, intermediate_size=768),
    "vit-s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, head_dim=64, intermediate_size=1536),
    "vit-b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, head_dim=64, intermediate_size=3072),
    "vit-l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, head_dim=64, intermediate_size=4096),
}

# Masking policies of pre-training (modeling_myna/masking.py) and schedules of the masking ratio; "uniform" and
# "constant" are the paper's.
MASKING_POLICIES = ("uniform", "time_block", "frequency_band", "multi_block", "complementary", "saliency")
MASK_RATIO_SCHEDULES = ("constant", "linear", "cosine")
# What the tokenizers see: the raw power mel (the paper's, the released models'), or its log after LOG_OFFSET, a floor
# about 1% of a music mel's bins fall below (power values span ~1e-8 to ~1e4 at full scale); "mixed": the log for
# square patches, the raw power for vertical (full-height) ones.
INPUT_SCALES = ("power", "log", "mixed")
LOG_OFFSET = 1e-6
# What the statistics loss's head predicts of each mel bin's log over a crop: its mean and standard deviation over
# time (the default), and "delta", the mean absolute change from one frame to the next (how much the bin moves).
STATISTICS_TARGETS = ("mean", "std", "delta")
DEFAULT_STATISTICS_TARGETS = ("mean", "std")

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


def model_size_name(config) -> str | None:
    """The `MODEL_SIZES` name whose sizes `config` has, or `None`."""
    for name, size in MODEL_SIZES.items():
        if all(getattr(config, key) == value for key, value in size.items()):
            return name
    return None


def patch_mode_name(patch_size: list[int], num_mel_bins: int) -> str:
    """`"vertical"` for a full-height strip, `"square"` otherwise (the paper's names)."""
    return "vertical" if patch_size[0] == num_mel_bins else "square"


def _is_finite_number(value) -> bool:
    """A finite int or float; not a bool, a string or NaN (for the loss weights' checks)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
        projection_hidden_size (`int`, *optional*, defaults to 0):
            Hidden width of the contrastive projection: 0 for the paper's linear one, else Linear -> GELU -> Linear
            (SimCLR's two-layer head, with GELU: the loss's invariances can live in the head rather than the encoder).
            Pre-training only: the encoder (`MynaModel`) is the same either way.
        statistics_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of an auxiliary pre-training loss beside the contrastive one (0: none, the paper's). When positive,
            a linear head predicts from each masked view's pooled embedding the statistics of that view's whole crop,
            by default the mean and standard deviation over time of each mel bin's log (`statistics_targets`; as
            PASE's workers predict hand-crafted features), standardised over the batch; the loss is their mean
            squared error, averaged over tokenizers.
            It asks the encoder to keep the spectral envelope and its movement that the contrastive pairs can leave
            out. Pre-training only, like the projection.
        statistics_targets (`list[str]`, *optional*, defaults to `["mean", "std"]`):
            What the statistics head predicts of each mel bin's log over the crop, in this order: any of `"mean"`,
            `"std"` (over time) and `"delta"` (the mean absolute change from one frame to the next: how fast the bin
            moves, what the hand-crafted rows' MFCC deltas hold). Used only when `statistics_loss_weight > 0`.
        tokenizer_loss_weights (`list[float]`, *optional*):
            A hybrid's weight of each tokenizer's contrastive loss, in the order of `patch_sizes` (square, then
            vertical); the loss is their weighted mean. Defaults to equal weights, the reference code's plain mean.
            Pre-training only.
        mask_ratio (`float`, *optional*, defaults to 0.9):
            Fraction of patch tokens dropped from each view in pre-training.
        classifier_hidden_size (`int`, *optional*, defaults to 0):
            Hidden width of the audio-classification head: 0 for a linear head, else Linear -> ReLU -> Dropout ->
            Linear (the one-hidden-layer probe of JukeMIR).
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout of the hidden layer of that head.
            Fraction of patch tokens dropped from each view in pre-training (the final ratio of a schedule).
        masking_policy (`str`, *optional*, defaults to `"uniform"`):
            How pre-training chooses the kept tokens (`modeling_myna.masking`): `"uniform"` (the paper's),
            `"time_block"`, `"frequency_band"` (square patches), `"multi_block"`, `"complementary"` or `"saliency"`.
            Pre-training reads it; the model's forward does not (it takes `noise`), so inference is unaffected.
        masking_policy_kwargs (`dict`, *optional*):
            Options of the policy, e.g. `{"temperature": 0.5}` for `"saliency"`.
        mask_ratio_schedule (`str`, *optional*, defaults to `"constant"`):
            `"constant"` (the paper's), `"linear"` or `"cosine"` from `mask_ratio_start` to `mask_ratio`.
        mask_ratio_start (`float`, *optional*):
            Masking ratio at the first step of a non-constant schedule.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialisation of linear layers.
        sampling_rate (`int`, *optional*, defaults to 16000):
            Sampling rate the model was trained at.
        input_scale (`str`, *optional*, defaults to `"power"`):
            What the tokenizers see of the mel spectrogram: `"power"`, the raw power values (the paper's and the
            released models'), or `"log"`, their natural log after adding `LOG_OFFSET` (1e-6). Raw power spans
            about twelve orders of magnitude in music, so each patch's LayerNorm keeps its few loudest bins and flattens the
            rest; the log keeps the whole spectral envelope. `"mixed"` gives each tokenizer its own: the log to square
            patches, the raw power to vertical (full-height) ones, whose loudest bins are the notes being played.
            The input (`MynaFeatureExtractor`'s output) is the same either way: the model takes the log itself, so
            every path through it agrees.

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
        projection_hidden_size: int = 0,
        statistics_loss_weight: float = 0.0,
        statistics_targets: list[str] | None = None,
        tokenizer_loss_weights: list[float] | None = None,
        mask_ratio: float = 0.9,
        classifier_hidden_size: int = 0,
        classifier_dropout: float = 0.0,
        masking_policy: str = "uniform",
        masking_policy_kwargs: dict | None = None,
        mask_ratio_schedule: str = "constant",
        mask_ratio_start: float | None = None,
        initializer_range: float = 0.02,
        sampling_rate: int = SAMPLING_RATE,
        input_scale: str = "power",
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
        self.projection_hidden_size = projection_hidden_size
        self.statistics_loss_weight = statistics_loss_weight
        if statistics_targets is None:
            statistics_targets = DEFAULT_STATISTICS_TARGETS
        self.statistics_targets = (
            list(statistics_targets) if isinstance(statistics_targets, (list, tuple)) else statistics_targets
        )
        self.tokenizer_loss_weights = (
            list(tokenizer_loss_weights) if isinstance(tokenizer_loss_weights, (list, tuple)) else tokenizer_loss_weights
        )
        self.mask_ratio = mask_ratio
        self.classifier_hidden_size = classifier_hidden_size
        self.classifier_dropout = classifier_dropout
        self.masking_policy = masking_policy
        self.masking_policy_kwargs = dict(masking_policy_kwargs or {})
        self.mask_ratio_schedule = mask_ratio_schedule
        self.mask_ratio_start = mask_ratio_start
        self.initializer_range = initializer_range
        self.sampling_rate = sampling_rate
        self.input_scale = input_scale
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
        if self.masking_policy not in MASKING_POLICIES:
            raise ValueError(f"masking_policy={self.masking_policy!r}: choose one of {list(MASKING_POLICIES)}.")
        if self.masking_policy == "frequency_band" and self.patch_modes == ["vertical"]:
            raise ValueError(
                "masking_policy='frequency_band' keeps a band of patch rows, but vertical patches span every mel bin "
                "(one row): on them it is 'uniform'. Use square or hybrid patches, or masking_policy='uniform'."
            )
        if self.mask_ratio_schedule not in MASK_RATIO_SCHEDULES:
            raise ValueError(
                f"mask_ratio_schedule={self.mask_ratio_schedule!r}: choose one of {list(MASK_RATIO_SCHEDULES)}."
            )
        if self.mask_ratio_schedule != "constant" and (
            self.mask_ratio_start is None or not 0.0 <= self.mask_ratio_start < 1.0
        ):
            raise ValueError(
                f"mask_ratio_schedule={self.mask_ratio_schedule!r} needs mask_ratio_start in [0, 1), got "
                f"{self.mask_ratio_start}."
            )
        if not isinstance(self.projection_hidden_size, int) or self.projection_hidden_size < 0:
            raise ValueError(
                f"projection_hidden_size={self.projection_hidden_size!r}: give 0 for a linear projection (the "
                "paper's) or the hidden width of an MLP projection head, e.g. 512."
            )
        if not _is_finite_number(self.statistics_loss_weight) or self.statistics_loss_weight < 0:
            raise ValueError(
                f"statistics_loss_weight={self.statistics_loss_weight!r}: give 0 for the contrastive loss alone (the "
                "paper's) or a positive weight of the auxiliary statistics loss, e.g. 1.0."
            )
        self._validate_statistics_targets()
        self._validate_tokenizer_loss_weights()
        if self.input_scale not in INPUT_SCALES:
            raise ValueError(
                f"input_scale={self.input_scale!r}: choose one of {list(INPUT_SCALES)} ('power' for the released "
                "models, 'log' for the log of the power mel, 'mixed' for the log in square patches only)."
            )
        if self.chunk_frames < self.patch_sizes[0][1]:
            raise ValueError(f"chunk_frames={self.chunk_frames} is narrower than one patch {self.patch_sizes[0]}.")

    def _validate_statistics_targets(self) -> None:
        targets = self.statistics_targets
        if (
            not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets)
            or len(set(targets)) != len(targets) or not set(targets) <= set(STATISTICS_TARGETS)
        ):
            raise ValueError(
                f"statistics_targets={targets!r}: give a list of distinct names from {list(STATISTICS_TARGETS)}, e.g. "
                f"{list(DEFAULT_STATISTICS_TARGETS)} (the default) or ['mean', 'std', 'delta']."
            )

    def _validate_tokenizer_loss_weights(self) -> None:
        weights = self.tokenizer_loss_weights
        if weights is None:
            return
        if not isinstance(weights, list) or len(weights) != len(self.patch_sizes):
            raise ValueError(
                f"tokenizer_loss_weights={weights!r} for {len(self.patch_sizes)} tokenizer(s) {self.patch_modes}: "
                "give a list of one weight per tokenizer of a hybrid model (square, then vertical, e.g. [1, 3]), or "
                "leave it unset for equal weights."
            )
        if not all(_is_finite_number(w) and w > 0 for w in weights):
            raise ValueError(
                f"tokenizer_loss_weights={weights!r}: every weight must be a positive number (a tokenizer with weight "
                "0 would get no gradient); to train one tokenizer alone, use the square or vertical variant."
            )

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
    def from_variant(cls, variant: str, model_size: str | None = None, **kwargs) -> "MynaConfig":
        """The configuration of a released variant: `"base"` (16x16), `"vertical"` (128x2) or `"hybrid"` (both).

        `model_size` names an encoder of `MODEL_SIZES` (`"vit-t"`, `"vit-s"`, `"vit-b"`, `"vit-l"`, `"small"`);
        explicit `kwargs` override its values.
        """
        if variant not in VARIANTS:
            raise ValueError(f"unknown Myna variant {variant!r}: choose one of {sorted(VARIANTS)}.")
        if model_size is not None:
            if model_size not in MODEL_SIZES:
                raise ValueError(f"model_size={model_size!r}: choose one of {list(MODEL_SIZES)}.")
            kwargs = {**MODEL_SIZES[model_size], **kwargs}
        return cls(patch_sizes=VARIANTS[variant], **kwargs)


__all__ = ["MASKING_POLICIES", "MODEL_SIZES", "MynaConfig", "model_size_name"]
