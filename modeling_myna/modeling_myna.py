"""PyTorch Myna: a SimpleViT encoder on mel spectrograms with token masking.

Follows Myna (arXiv 2502.12511) and its reference code ghost-signal/myna, itself built on lucidrains'
`simple_vit.py` (Beyer et al. 2022, "Better plain ViT baselines"): square (16x16) or vertical (128x2) patches,
fixed 2D sin-cos positions, pre-norm blocks, mean pooling, no CLS token. Masking follows MAE's `random_masking`
(He et al. 2022): the tokens with the smallest noise are kept, so a fixed `noise` gives a fixed mask.
"""

import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_myna import (
    BOTH_PATCH_MODES,
    DEFAULT_STATISTICS_TARGETS,
    LOG_OFFSET,
    STATISTICS_TARGETS,
    MynaConfig,
    patch_mode_name,
)
from .model_card import write_model_card


def sincos_position_embedding(
    grid_height: int, grid_width: int, dim: int, temperature: float = 10_000.0, device=None
) -> torch.Tensor:
    """Fixed 2D sin-cos embedding of a patch grid, `(grid_height * grid_width, dim)`, row-major.

    For the token at (row y, column x): `[sin(x w), cos(x w), sin(y w), cos(y w)]` with
    `w_k = temperature ** -(k / (dim / 4 - 1))`, as in SimpleViT.
    """
    y, x = torch.meshgrid(
        torch.arange(grid_height, device=device, dtype=torch.float32),
        torch.arange(grid_width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    omega = torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4 - 1)
    omega = temperature**-omega
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1)


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens kept by masking: `N - int(mask_ratio * N)` (5 of 48 at the paper's 0.9)."""
    return num_tokens - int(mask_ratio * num_tokens)


def pool_chunks(chunk_values: torch.Tensor, audio_index: torch.Tensor, num_audios: int | None = None) -> torch.Tensor:
    """Mean of the rows of `chunk_values` `(num_chunks, ...)` that share an `audio_index`: `(num_audios, ...)`.

    This is how a track's chunk embeddings, or a probe's chunk outputs, become one per track.
    """
    if num_audios is None:
        num_audios = int(audio_index.max()) + 1
    sums = chunk_values.new_zeros((num_audios, *chunk_values.shape[1:]))
    sums.index_add_(0, audio_index, chunk_values)
    counts = torch.bincount(audio_index, minlength=num_audios).clamp(min=1).to(chunk_values.dtype)
    return sums / counts.view(-1, *([1] * (chunk_values.dim() - 1)))


def log_power(power: torch.Tensor) -> torch.Tensor:
    """The log of a power mel as the model takes it (`input_scale="log"`): negatives clamped to 0, `LOG_OFFSET` added."""
    return torch.log(power.clamp_min(0) + LOG_OFFSET)


class MynaPatchEmbeddings(nn.Module):
    """One tokenizer: cuts `input_values` `(batch, num_mel_bins, frames)` into patches and embeds them.

    Patches are taken row-major over the grid (frequency index major, time index minor); each patch vector is
    flattened frequency-major. LayerNorm -> Linear -> LayerNorm, as SimpleViT. The first LayerNorm runs in float32
    whatever the weights' dtype: raw power mels reach ~1e6, past float16's 65504, and are O(1) after it. A model
    with `input_scale="log"` takes the log of the (kept) patches first; with `"mixed"`, only a square tokenizer does.
    """

    def __init__(self, config: MynaConfig, patch_size: list[int]):
        super().__init__()
        self.patch_height, self.patch_width = patch_size
        square = patch_mode_name(patch_size, config.num_mel_bins) == "square"
        self.log_input = config.input_scale == "log" or (config.input_scale == "mixed" and square)
        patch_dim = self.patch_height * self.patch_width
        self.patch_norm = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
        self.projection = nn.Linear(patch_dim, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def grid_size(self, num_mel_bins: int, num_frames: int) -> tuple[int, int]:
        return num_mel_bins // self.patch_height, num_frames // self.patch_width

    def patchify(self, input_values: torch.Tensor) -> torch.Tensor:
        """`(batch, num_mel_bins, frames)` -> raw patch vectors `(batch, num_tokens, patch_height * patch_width)`."""
        batch_size, num_mel_bins, num_frames = input_values.shape
        grid_height, grid_width = self.grid_size(num_mel_bins, num_frames)
        # Frames that do not fill a last patch are dropped, as the reference does.
        patches = input_values[:, :, : grid_width * self.patch_width]
        patches = patches.reshape(batch_size, grid_height, self.patch_height, grid_width, self.patch_width)
        return patches.permute(0, 1, 3, 2, 4).reshape(batch_size, grid_height * grid_width, -1)

    def forward(self, input_values: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens `(batch, num_tokens, hidden_size)`, or only the `(batch, num_kept)` `ids_keep` of the grid.

        Every step is per token, so gathering the raw patches first gives the same tokens as embedding all of them
        and gathering after, for a tenth of the work at the paper's 90% masking.
        """
        patches = self.patchify(input_values)
        if ids_keep is not None:
            patches = patches.gather(1, ids_keep[..., None].expand(-1, -1, patches.shape[-1]))  # (B, K, P) kept
        patches = patches.float()
        if self.log_input:
            patches = log_power(patches)
        norm = self.patch_norm
        patches = nn.functional.layer_norm(
            patches, norm.normalized_shape, norm.weight.float(), norm.bias.float(), norm.eps
        )
        return self.norm(self.projection(patches.to(self.projection.weight.dtype)))


class MynaTokenizers(nn.ModuleList):
    """The tokenizers of a model (one per patch size), called as one module.

    It is what `get_input_embeddings` returns: every tokenizer's output passes through its forward, so a hook on it
    (`enable_input_require_grads`, PEFT) sees the tokens of a hybrid model's both tokenizers.
    """

    def forward(
        self, input_values: torch.Tensor, tokenizer_index: int = 0, ids_keep: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self[tokenizer_index](input_values, ids_keep)


# Bytes of sin-cos tables kept per model (about three hours of hybrid input); the least recently used grids are
# dropped beyond it and recomputed when they come back, which costs far less than a forward.
POSITION_CACHE_BYTES = 64 * 2**20


class MynaEmbeddings(nn.Module):
    """Tokenizers (one per patch size), fixed sin-cos positions and token masking.

    The positional table depends only on the patch grid, so it is computed once per (grid, device) and cached, up
    to `POSITION_CACHE_BYTES` (least recently used out first); it is never stored in the checkpoint, so any number
    of frames can be encoded.
    """

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = MynaTokenizers([MynaPatchEmbeddings(config, p) for p in config.patch_sizes])
        self._position_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def position_embeddings(self, grid_height: int, grid_width: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            # Traced graphs constant-fold the table; caching a traced tensor would leak it out of the trace.
            return sincos_position_embedding(grid_height, grid_width, self.config.hidden_size, device=device)
        key = (grid_height, grid_width, str(device))
        if key in self._position_cache:
            self._position_cache.move_to_end(key)
            return self._position_cache[key]
        table = sincos_position_embedding(grid_height, grid_width, self.config.hidden_size, device=device)
        self._position_cache[key] = table
        cached_bytes = sum(t.numel() * t.element_size() for t in self._position_cache.values())
        while cached_bytes > POSITION_CACHE_BYTES:
            _, dropped = self._position_cache.popitem(last=False)
            cached_bytes -= dropped.numel() * dropped.element_size()
        return table

    def kept_indices(
        self,
        batch_size: int,
        num_tokens: int,
        mask_ratio: float | None,
        noise: torch.Tensor | None,
        device: torch.device,
        tokenizer_index: int = 0,
    ) -> torch.Tensor | None:
        """`(batch, num_kept)` grid indices of the tokens that masking keeps, `None` when nothing is dropped.

        The tokens with the smallest `noise` are kept, in increasing noise order (MAE's `random_masking`). When the
        ratio drops no token (`mask_ratio=0`, or a grid too small for it), the tokens stay in grid order even if a
        `noise` is given: there is nothing to mask, and a permutation would only reorder `last_hidden_state`.
        """
        if noise is None and not mask_ratio:
            return None
        if noise is not None and tuple(noise.shape) != (batch_size, num_tokens):
            tokenizer = self.patch_embeddings[tokenizer_index]
            raise ValueError(
                f"noise has shape {tuple(noise.shape)} but this input has {num_tokens} tokens per example with the "
                f"{tokenizer.patch_height}x{tokenizer.patch_width} tokenizer: pass (batch, {num_tokens})."
            )
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        num_kept = num_kept_tokens(num_tokens, ratio)
        if num_kept == num_tokens:
            return None
        if noise is None:
            noise = torch.rand(batch_size, num_tokens, device=device)
        return noise.to(device).argsort(dim=1)[:, :num_kept]  # (B, K) smallest noise kept

    def forward(
        self,
        input_values: torch.Tensor,
        tokenizer_index: int = 0,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Returns the `(batch, num_kept, hidden_size)` tokens and, when masking, the `(batch, num_kept)` indices of
        the kept tokens in the full grid (`None` without masking). Only the kept patches are tokenized.
        """
        grid_height, grid_width = self.patch_embeddings[tokenizer_index].grid_size(
            input_values.shape[1], input_values.shape[2]
        )
        ids_keep = self.kept_indices(
            input_values.shape[0], grid_height * grid_width, mask_ratio, noise, input_values.device, tokenizer_index
        )
        tokens = self.patch_embeddings(input_values, tokenizer_index, ids_keep)  # (B, K, D)
        positions = self.position_embeddings(grid_height, grid_width, tokens.device).to(tokens.dtype)  # (N, D)
        if ids_keep is not None:
            positions = positions[ids_keep]  # (B, K, D) positions of the kept tokens
        return tokens + positions, ids_keep


# The largest activation a no-grad CPU forward allocates in one pass (`MynaModel._inference_pieces`); larger batches
# run in row pieces. glibc serves allocations above its mmap threshold (at most 32 MiB) with fresh pages, which every
# forward then faults in again: a 3-minute hybrid "both" batch (116 x 48 tokens, 34 MB MLP activations) spent 15% of
# its float32 time and 45% of its int8 time there. Below the threshold the allocator reuses its memory.
CPU_INFERENCE_PIECE_BYTES = 24 * 2**20


# Attention functions that take an additive `(batch, 1, N, N)` mask.
MASKED_ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention on `(batch, heads, tokens, head_dim)`; returns `(batch, tokens, heads, head_dim)`."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class MynaAttention(nn.Module):
    """Multi-head self-attention with one fused, bias-free qkv projection and a bias-free output projection."""

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        inner_dim = self.num_heads * self.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * inner_dim, bias=False)
        self.o_proj = nn.Linear(inner_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)

        implementation = self.config._attn_implementation
        if output_attentions:
            # Fused kernels return no weights, so a call that wants them takes the eager path.
            implementation = "eager"
        elif attention_mask is not None and implementation not in MASKED_ATTENTION_IMPLEMENTATIONS:
            # Flash kernels take no additive mask; the block-diagonal "both" mask goes through SDPA for that call.
            implementation = "sdpa"
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask, scaling=self.scaling, dropout=0.0
        )
        attn_output = attn_output.reshape(batch_size, num_tokens, -1)
        return self.o_proj(attn_output), attn_weights


class MynaMLP(nn.Module):
    def __init__(self, config: MynaConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class MynaLayer(GradientCheckpointingLayer):
    """Pre-norm block: `x + Attn(LN(x))`, then `x + MLP(LN(x))`."""

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MynaAttention(config)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MynaMLP(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(
            self.layernorm_before(hidden_states), attention_mask, output_attentions
        )
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.layernorm_after(hidden_states))
        return hidden_states, attn_weights


class MynaEncoder(nn.Module):
    def __init__(self, config: MynaConfig):
        super().__init__()
        self.layers = nn.ModuleList([MynaLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """`attention_mask` `(1, 1, N, N)` is added to the attention scores (0 or the dtype's minimum)."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


REMOTE_CODE_AUTO_MAP = {
    "AutoConfig": "configuration_myna.MynaConfig",
    "AutoModel": "modeling_myna.MynaModel",
    "AutoModelForAudioClassification": "modeling_myna.MynaForAudioClassification",
    "AutoModelForPreTraining": "modeling_myna.MynaForContrastivePretraining",
}


class MynaPreTrainedModel(PreTrainedModel):
    config_class = MynaConfig
    config: MynaConfig
    base_model_prefix = "myna"
    main_input_name = "input_values"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MynaLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def save_pretrained(self, save_directory, *args, model_card_kwargs: dict | None = None, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus a model card (`README.md`) unless the folder has one.

        `model_card_kwargs` go to [`render_model_card`] (training data, training config, evaluation table).
        """
        # Every head's entry, so that a folder saved from any of them loads with any Auto class and
        # `trust_remote_code=True` (custom_object_save adds only the saving class's own entry).
        self.config.auto_map = {**REMOTE_CODE_AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        super().save_pretrained(save_directory, *args, **kwargs)
        is_main_process = kwargs.get("is_main_process", True)
        if is_main_process and (model_card_kwargs or not os.path.exists(os.path.join(save_directory, "README.md"))):
            write_model_card(
                save_directory, self.config, num_parameters=self.num_parameters(), **(model_card_kwargs or {})
            )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str | None = "50GB",
        tags: list[str] | None = None,
        model_card_kwargs: dict | None = None,
    ) -> str:
        """Uploads what `save_pretrained` writes (weights, config, code, the Myna model card) to `repo_id`.

        transformers' own `push_to_hub` replaces README.md with the repository's existing card or a generic
        template; Myna folders keep the card that describes them, with `tags` added to its metadata.
        """
        from huggingface_hub import HfApi

        repo_id = HfApi().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        model_card_kwargs = dict(model_card_kwargs or {})
        model_card_kwargs["tags"] = [*model_card_kwargs.get("tags", []), *(self.model_tags or []), *(tags or [])]
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir, max_shard_size=max_shard_size, model_card_kwargs=model_card_kwargs)
            return self._upload_modified_files(
                tmp_dir,
                repo_id,
                files_timestamps={},
                commit_message=commit_message or "Upload model",
                token=token,
                create_pr=create_pr,
                revision=revision,
                commit_description=commit_description,
            )

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def block_diagonal_mask(
    lengths: list[int], dtype: torch.dtype, device: torch.device | None = None
) -> torch.Tensor:
    """Additive `(1, 1, N, N)` attention mask, `N = sum(lengths)`: 0 within each segment, the dtype's minimum across.

    Tokens of one segment attend only to their own segment, so one pass over the concatenated sequence equals one
    pass per segment.
    """
    segment = torch.cat([torch.full((length,), i, device=device) for i, length in enumerate(lengths)])
    same = segment[:, None] == segment[None, :]
    mask = torch.zeros(same.shape, dtype=dtype, device=device).masked_fill(~same, torch.finfo(dtype).min)
    return mask[None, None]


@dataclass
class MynaModelOutput(BaseModelOutputWithPooling):
    """
    [`BaseModelOutputWithPooling`] plus the kept indices of a masked forward.

    Args:
        ids_keep (`torch.LongTensor` of shape `(batch_size, num_kept)`, *optional*):
            Returned when masking: `last_hidden_state[:, j]` is token `ids_keep[:, j]` of the full token sequence
            (grid row-major; for `"both"`, the square grid followed by the vertical grid, so vertical indices are
            offset by the square token count). `None` without masking.
    """

    ids_keep: torch.LongTensor | None = None


class MynaModel(MynaPreTrainedModel):
    """The bare Myna encoder: chunk spectrograms in, per-token states and a mean-pooled embedding out."""

    # Pre-training checkpoints carry the projection (and the statistics head); the bare encoder has no use for them.
    _keys_to_ignore_on_load_unexpected = [r"^projection\.", r"^statistics_head\."]

    def __init__(self, config: MynaConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = MynaEmbeddings(config)
        self.encoder = MynaEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> MynaTokenizers:
        """The tokenizers, one module for all of them: its forward hooks see every tokenizer's tokens."""
        return self.embeddings.patch_embeddings

    def set_input_embeddings(self, value: MynaTokenizers) -> None:
        self.embeddings.patch_embeddings = value

    def _tokenizer_indices(self, patch_mode: str | None) -> list[int]:
        patch_mode = patch_mode or self.config.default_patch_mode
        if patch_mode == BOTH_PATCH_MODES and len(self.config.patch_sizes) > 1:
            return list(range(len(self.config.patch_sizes)))
        if patch_mode in self.config.patch_modes:
            return [self.config.patch_modes.index(patch_mode)]
        raise ValueError(
            f"patch_mode={patch_mode!r} is not available for this model; it accepts {self.config.available_patch_modes}."
        )

    def _check_input(self, input_values: torch.Tensor, tokenizer_indices: list[int]) -> None:
        # float16 input is accepted (the tokenizers compute in float32), but raw power mels past float16's 65504
        # become inf in the cast: say so rather than return NaN embeddings. Not checked inside a traced graph.
        tracing = torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
        if input_values.dtype == torch.float16 and not tracing and not torch.isfinite(input_values).all():
            raise ValueError(
                "input_values is float16 and holds inf or NaN: raw power mel values past float16's 65504 overflow "
                "when cast to it (audio louder than full scale, or not in [-1, 1]). Pass the feature extractor's "
                "float32 input_values as they are (a float16 model casts them after its first LayerNorm, which runs "
                "in float32), or bfloat16; or scale the audio into [-1, 1]."
            )
        if input_values.dim() != 3 or input_values.shape[1] != self.config.num_mel_bins:
            raise ValueError(
                f"input_values must have shape (batch, {self.config.num_mel_bins}, frames), got "
                f"{tuple(input_values.shape)}: compute it with MynaFeatureExtractor."
            )
        widest = max(self.config.patch_sizes[i][1] for i in tokenizer_indices)
        if input_values.shape[2] < widest:
            raise ValueError(
                f"input_values has {input_values.shape[2]} frames, fewer than one patch ({widest} frames) wide."
            )

    def _inference_pieces(self, hidden_states: torch.Tensor) -> int:
        """How many row pieces a no-grad CPU forward of `hidden_states` `(B, N, D)` runs in (1: one pass).

        A pass over B sequences allocates activations of `B * N * intermediate_size` values; past
        `CPU_INFERENCE_PIECE_BYTES` the batch goes through the encoder in equal row pieces instead. Each sequence is
        encoded on its own either way, so the outputs are the same. Training, GPUs and traced graphs run one pass.
        """
        if (
            hidden_states.device.type != "cpu"
            or torch.is_grad_enabled()
            or torch.compiler.is_compiling()
            or torch.compiler.is_exporting()
        ):
            return 1
        batch_size, num_tokens, hidden_size = hidden_states.shape
        widest = max(self.config.intermediate_size, 3 * hidden_size)
        activation_bytes = batch_size * num_tokens * widest * hidden_states.element_size()
        return max(1, min(batch_size, -(-activation_bytes // CPU_INFERENCE_PIECE_BYTES)))

    def _encoder_output(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states (no per-layer outputs), in row pieces for large CPU inference batches."""
        pieces = self._inference_pieces(hidden_states)
        if pieces == 1:
            return self.encoder(hidden_states)[0]
        return torch.cat([self.encoder(piece)[0] for piece in hidden_states.tensor_split(pieces)])

    def _encode(
        self, tokens: list[torch.Tensor], output_attentions: bool, output_hidden_states: bool
    ) -> tuple[torch.Tensor, torch.Tensor, tuple | None, tuple | None]:
        """Runs the shared encoder over each tokenizer's `(B, N_i, D)` tokens.

        Returns `last_hidden_state` `(B, sum N_i, D)`, the pooled `(B, len(tokens) * D)` and the per-layer states
        and attentions. Each tokenizer's tokens attend only to themselves, so every layout below is the same maths:

        - without per-layer outputs and with equal token counts (48 and 48 for a 96-frame hybrid chunk), the sets go
          through as one `(n * B, N, D)` batch with no mask: the cost of separate passes, in fewer, larger matrix
          products, with any attention kernel;
        - without per-layer outputs and with unequal counts, one pass per tokenizer;
        - with per-layer outputs (`hidden_states`, `attentions`), one pass over the concatenated sequence
          `[square ; vertical]` under a block-diagonal mask, so that each layer's output is one tensor
          `(B, sum N_i, D)` as for a single tokenizer. Slower (attention over `sum N_i` tokens, a mask, the eager
          kernel for attentions), and asked for only when those outputs are.

        Large no-grad CPU batches run in row pieces (`_inference_pieces`). Per-layer outputs are always the autograd
        graph's own tensors.
        """
        if len(tokens) == 1:
            if output_attentions or output_hidden_states:
                hidden_states, all_hidden_states, all_attentions = self.encoder(
                    tokens[0], None, output_attentions, output_hidden_states
                )
            else:
                hidden_states, all_hidden_states, all_attentions = self._encoder_output(tokens[0]), None, None
            last_hidden_state = self.layernorm(hidden_states)
            return last_hidden_state, last_hidden_state.mean(dim=1), all_hidden_states, all_attentions

        lengths = [t.shape[1] for t in tokens]
        if output_attentions or output_hidden_states:
            mask = block_diagonal_mask(lengths, tokens[0].dtype, tokens[0].device)
            hidden_states, all_hidden_states, all_attentions = self.encoder(
                torch.cat(tokens, dim=1), mask, output_attentions, output_hidden_states
            )
            last_hidden_state = self.layernorm(hidden_states)
            segments = last_hidden_state.split(lengths, dim=1)
        elif all(length == lengths[0] for length in lengths):
            hidden_states = self._encoder_output(torch.cat(tokens, dim=0))
            # (n * B, N, D) -> n x (B, N, D); unflatten rather than chunk keeps a symbolic batch size exportable.
            segments = self.layernorm(hidden_states).unflatten(0, (len(tokens), -1)).unbind(0)
            last_hidden_state, all_hidden_states, all_attentions = torch.cat(segments, dim=1), None, None
        else:
            segments = [self.layernorm(self._encoder_output(t)) for t in tokens]
            last_hidden_state, all_hidden_states, all_attentions = torch.cat(segments, dim=1), None, None
        pooler_output = torch.cat([s.mean(dim=1) for s in segments], dim=-1)
        return last_hidden_state, pooler_output, all_hidden_states, all_attentions

    def forward(
        self,
        input_values: torch.Tensor,
        patch_mode: str | None = None,
        mask_ratio: float | None = None,
        noise: torch.Tensor | list[torch.Tensor] | None = None,
        audio_index: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MynaModelOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_mel_bins, num_frames)`):
                Raw power mel spectrograms from [`MynaFeatureExtractor`]. Any number of frames at least one patch
                wide; frames that do not fill a last patch are dropped. float32, bfloat16 or float16 (the
                tokenizers compute in float32 whatever the model's dtype); float16 input that overflowed in the cast
                (values past 65504 are inf) is refused.
            patch_mode (`str`, *optional*):
                `"square"`, `"vertical"` or, for a hybrid model, `"both"`: the tokens of both tokenizers are encoded
                by the shared encoder, each set attending only to itself, and concatenated along the sequence
                (`last_hidden_state`, `hidden_states`: `(batch, N_square + N_vertical, hidden_size)`; `attentions`
                are block-diagonal), and the pooled embeddings along the features (`[square ; vertical]`, as the
                reference's hybrid mode). Defaults to `config.default_patch_mode`.
            mask_ratio (`float`, *optional*):
                Drop this fraction of each example's tokens before the encoder (pre-training keeps
                `N - int(0.9 N)`). No masking when neither `mask_ratio` nor `noise` is given, nor when the ratio
                drops no token (`mask_ratio=0`).
            noise (`torch.FloatTensor` of shape `(batch_size, num_tokens)`, *optional*):
                Fixes the mask: the tokens with the smallest noise are kept. With `"both"`, a list of one tensor per
                tokenizer. Uses `config.mask_ratio` when `mask_ratio` is not given.
            audio_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                The feature extractor's chunk-to-input mapping. The outputs stay per chunk; [`pool_chunks`]
                averages them per input. It and the extractor's other outputs (`chunk_start_frames`, `num_frames`)
                are accepted so that `model(**features)` works.

        Returns:
            [`MynaModelOutput`]: `last_hidden_state` `(batch_size, num_tokens, hidden_size)` after the final
            LayerNorm, `pooler_output` `(batch_size, hidden_size)` (twice as wide for `"both"`), the mean of the
            tokens; `hidden_states` (embeddings + one per block) and `attentions` when asked for; `ids_keep` when
            masking.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        tokenizer_indices = self._tokenizer_indices(patch_mode)
        self._check_input(input_values, tokenizer_indices)
        if len(tokenizer_indices) == 1 and isinstance(noise, (list, tuple)) and len(noise) == 1:
            noise = noise[0]
        if len(tokenizer_indices) > 1 and noise is not None and not isinstance(noise, (list, tuple)):
            raise ValueError('patch_mode="both" needs one noise tensor per tokenizer: pass a list [square, vertical].')

        tokens, kept = [], []
        for i, index in enumerate(tokenizer_indices):
            tokenizer_noise = noise[i] if isinstance(noise, (list, tuple)) else noise
            tokenizer_tokens, ids_keep = self.embeddings(input_values, index, mask_ratio, tokenizer_noise)
            tokens.append(tokenizer_tokens)
            kept.append(ids_keep)
        last_hidden_state, pooler_output, all_hidden_states, all_attentions = self._encode(
            tokens, output_attentions, output_hidden_states
        )
        ids_keep = self._combined_ids_keep(input_values, tokenizer_indices, kept)

        if not return_dict:
            return tuple(
                v
                for v in (last_hidden_state, pooler_output, all_hidden_states, all_attentions, ids_keep)
                if v is not None
            )
        return MynaModelOutput(
            last_hidden_state=last_hidden_state,
            pooler_output=pooler_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            ids_keep=ids_keep,
        )

    def _combined_ids_keep(
        self, input_values: torch.Tensor, tokenizer_indices: list[int], kept: list[torch.Tensor | None]
    ) -> torch.Tensor | None:
        """Each tokenizer's kept indices as indices into the concatenated token sequence, `(B, sum K_i)`."""
        if all(ids is None for ids in kept):
            return None
        combined, offset = [], 0
        for index, ids in zip(tokenizer_indices, kept):
            grid_height, grid_width = self.embeddings.patch_embeddings[index].grid_size(*input_values.shape[1:])
            num_tokens = grid_height * grid_width
            if ids is None:  # a grid too small to lose a token at this ratio keeps all of them, in order
                ids = torch.arange(num_tokens, device=input_values.device).expand(input_values.shape[0], -1)
            combined.append(ids + offset)
            offset += num_tokens
        return torch.cat(combined, dim=1)


@dataclass
class MynaContrastiveOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The contrastive loss, when a `loss_fn` was given.
        projections (`tuple[torch.FloatTensor]`):
            Per view, the projected embeddings `(batch_size, projection_dim)`; for `"both"`, views are ordered
            tokenizer-major: `(view1_square, view2_square, view1_vertical, view2_vertical)`.
        embeddings (`tuple[torch.FloatTensor]`):
            The pooled encoder outputs `(batch_size, hidden_size)` behind each projection, in the same order.
        statistics_loss (`torch.FloatTensor` of shape `()`, *optional*):
            With `config.statistics_loss_weight > 0` and a `loss_fn`: the auxiliary statistics loss (unweighted);
            `loss` is then the contrastive loss plus `statistics_loss_weight` times it.
    """

    loss: torch.FloatTensor | None = None
    projections: tuple[torch.FloatTensor, ...] | None = None
    embeddings: tuple[torch.FloatTensor, ...] | None = None
    statistics_loss: torch.FloatTensor | None = None


def crop_statistics(views: torch.Tensor, targets: Sequence[str] = DEFAULT_STATISTICS_TARGETS) -> torch.Tensor:
    """The targets of the statistics loss: `(N, num_mel_bins, frames)` power mel crops -> `(N, len(targets) *
    num_mel_bins)`, for each name of `targets` in order one column per bin of the log (`log_power`, as the log
    tokenizers take it): `"mean"` and `"std"` over time, `"delta"` the mean absolute change from one frame to the
    next. Float32, each column standardised over the `N` rows (a column that does not vary over them is 0)."""
    with torch.no_grad():
        log_mel = log_power(views.float())
        statistics = torch.cat([_bin_statistic(log_mel, name) for name in targets], dim=-1)
        centred = statistics - statistics.mean(dim=0)
        return centred / (centred.std(dim=0, correction=0) + 1e-3)


def _bin_statistic(log_mel: torch.Tensor, name: str) -> torch.Tensor:
    """One statistic of `crop_statistics` over the time axis of `(N, num_mel_bins, frames)` -> `(N, num_mel_bins)`."""
    if name == "mean":
        return log_mel.mean(dim=-1)
    if name == "std":
        return log_mel.std(dim=-1, correction=0)
    if name == "delta":
        return log_mel.diff(dim=-1).abs().mean(dim=-1)
    raise ValueError(f"Unknown statistics target {name!r}: choose among {list(STATISTICS_TARGETS)}.")


class MynaProjectionHead(nn.Module):
    """The MLP projection of `config.projection_hidden_size > 0`: Linear -> GELU -> Linear (SimCLR's two-layer head)."""

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.projection_hidden_size)
        self.out_proj = nn.Linear(config.projection_hidden_size, config.projection_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(nn.functional.gelu(self.dense(pooled)))


class MynaForContrastivePretraining(MynaPreTrainedModel):
    """Myna with its pre-training projection (`linear_head` of the reference code, or an MLP head when
    `config.projection_hidden_size > 0`).

    Each view is masked (`config.mask_ratio`, 90%), encoded, mean-pooled and projected; the contrastive loss
    lives in `training/losses.py` and is handed in as `loss_fn`, so one loss object (which may carry SogCLR state
    or a process group) serves every tokenizer. With `config.statistics_loss_weight > 0` a linear
    `statistics_head` also predicts each view's crop statistics (`crop_statistics`) from its pooled embedding.
    """

    main_input_name = "views"

    def __init__(self, config: MynaConfig):
        super().__init__(config)
        self.myna = MynaModel(config)
        if config.projection_hidden_size:
            self.projection = MynaProjectionHead(config)
        else:
            self.projection = nn.Linear(config.hidden_size, config.projection_dim)
        if config.statistics_loss_weight > 0:
            self.statistics_head = nn.Linear(config.hidden_size, len(config.statistics_targets) * config.num_mel_bins)
        self.post_init()

    def forward(
        self,
        views: list[torch.Tensor] | tuple[torch.Tensor, ...],
        patch_mode: str | None = None,
        mask_ratio: float | None = None,
        noise: list[torch.Tensor] | None = None,
        loss_fn: Callable[..., torch.Tensor] | None = None,
        return_dict: bool | None = None,
        **loss_kwargs,
    ) -> MynaContrastiveOutput | tuple:
        r"""
        Args:
            views (`list[torch.FloatTensor]`, each `(batch_size, num_mel_bins, num_frames)`):
                Views of the same clips (two crops in pre-training); row `i` of every view is the same clip. The
                views are encoded together as one batch.
            patch_mode (`str`, *optional*):
                Tokenizer(s) to train; `"both"` (hybrid default) runs the views through each tokenizer and the loss
                is the mean of the per-tokenizer losses, as in the reference code (weighted by
                `config.tokenizer_loss_weights` when set).
            mask_ratio (`float`, *optional*):
                Defaults to `config.mask_ratio`; pass 0 for unmasked views.
            noise (`torch.FloatTensor` or `list[torch.FloatTensor]`, *optional*):
                Fixes the masks: a `(num_views * batch_size, num_tokens)` tensor, rows ordered view-major; for
                `"both"`, a list with one such tensor per tokenizer.
            loss_fn (`Callable`, *optional*):
                Called as `loss_fn(*projections_of_one_tokenizer, tokenizer=k, **loss_kwargs)` once per tokenizer
                (`k` its index in `config.patch_sizes`, so a stateful loss such as SogCLR can keep one state per
                tokenizer); `loss` is the mean over tokenizers, as in the reference code (or their weighted mean,
                `config.tokenizer_loss_weights`), plus
                `config.statistics_loss_weight` times the statistics loss when that weight is positive.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if any(v.shape != views[0].shape for v in views[1:]):
            raise ValueError(
                f"views must share one shape to be encoded as one batch, got {[tuple(v.shape) for v in views]}: "
                "crop every view to the same number of frames."
            )
        stacked = torch.cat(list(views), dim=0)  # (V * B, F, T)

        # (V * B, T * D): every view through every tokenizer in one call, [square ; vertical] for "both".
        pooled = self.myna(
            stacked, patch_mode=patch_mode, mask_ratio=mask_ratio, noise=noise, return_dict=True
        ).pooler_output
        use_statistics = loss_fn is not None and self.config.statistics_loss_weight > 0
        # (V * B, len(statistics_targets) * F)
        targets = crop_statistics(stacked, self.config.statistics_targets) if use_statistics else None
        projections, embeddings, losses, statistics_losses = [], [], [], []
        tokenizer_indices = self.myna._tokenizer_indices(patch_mode)
        for tokenizer, tokenizer_pooled in zip(tokenizer_indices, pooled.split(self.config.hidden_size, dim=-1)):
            tokenizer_projections = self.projection(tokenizer_pooled).chunk(len(views), dim=0)  # V x (B, P)
            embeddings.extend(tokenizer_pooled.chunk(len(views), dim=0))
            projections.extend(tokenizer_projections)
            if loss_fn is not None:
                losses.append(loss_fn(*tokenizer_projections, tokenizer=tokenizer, **loss_kwargs))
            if use_statistics:
                predicted = self.statistics_head(tokenizer_pooled).float()
                statistics_losses.append(nn.functional.mse_loss(predicted, targets))

        loss = self._tokenizer_mean(losses, tokenizer_indices) if losses else None
        statistics_loss = torch.stack(statistics_losses).mean() if statistics_losses else None
        if statistics_loss is not None:
            loss = loss + self.config.statistics_loss_weight * statistics_loss
        if not return_dict:
            output = (loss, tuple(projections), tuple(embeddings), statistics_loss)
            return tuple(v for v in output if v is not None)
        return MynaContrastiveOutput(
            loss=loss, projections=tuple(projections), embeddings=tuple(embeddings), statistics_loss=statistics_loss
        )

    def _tokenizer_mean(self, losses: list[torch.Tensor], tokenizer_indices: list[int]) -> torch.Tensor:
        """The per-tokenizer losses' mean, weighted by `config.tokenizer_loss_weights` when set (Python floats: no
        tensor is built on the host each step)."""
        if self.config.tokenizer_loss_weights is None or len(tokenizer_indices) == 1:
            return torch.stack(losses).mean()
        weights = [self.config.tokenizer_loss_weights[k] for k in tokenizer_indices]
        return torch.stack([w * loss for w, loss in zip(weights, losses)]).sum() / sum(weights)


class MynaClassificationHead(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear on the pooled embedding (`config.classifier_hidden_size` wide)."""

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.dense = nn.Linear(config.embedding_size(), config.classifier_hidden_size)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.out_proj = nn.Linear(config.classifier_hidden_size, config.num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.relu(self.dense(pooled))))


class MynaForAudioClassification(MynaPreTrainedModel):
    """Myna with a linear head on the pooled embedding.

    Chunks of the same input are averaged when `audio_index` is given (the feature extractor returns it), so a
    long recording gets one prediction, as in the paper's probes. `config.problem_type` picks the loss:
    `"single_label_classification"`, `"multi_label_classification"` or `"regression"`.
    """

    # Its loss is a mean over the batch and ignores `num_items_in_batch`: Trainer must scale it for accumulation.
    accepts_loss_kwargs = False

    def __init__(self, config: MynaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.myna = MynaModel(config)
        if config.classifier_hidden_size:
            self.classifier = MynaClassificationHead(config)
        else:
            self.classifier = nn.Linear(config.embedding_size(), config.num_labels)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor,
        audio_index: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        patch_mode: str | None = None,
        mask_ratio: float | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(num_chunks, num_mel_bins, num_frames)`):
                Chunk spectrograms from [`MynaFeatureExtractor`].
            audio_index (`torch.LongTensor` of shape `(num_chunks,)`, *optional*):
                Input each chunk came from. When given, `logits` are averaged per input: `(num_inputs, num_labels)`;
                otherwise they are per chunk.
            labels (`torch.Tensor`, *optional*):
                One row per input (or per chunk without `audio_index`): class indices, multi-hot vectors or
                regression targets, as `config.problem_type` says.
            mask_ratio (`float`, *optional*):
                Drops this fraction of each chunk's tokens before the encoder (Myna's token masking, a fine-tuning
                augmentation); no masking when not given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.myna(
            input_values,
            patch_mode=patch_mode,
            mask_ratio=mask_ratio,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)
        if audio_index is not None:
            logits = pool_chunks(logits, audio_index.to(logits.device))

        loss = None
        if labels is not None:
            loss = ForSequenceClassificationLoss(labels.to(logits.device), logits, self.config)
        if not return_dict:
            output = (logits, outputs.hidden_states, outputs.attentions)
            return tuple(v for v in ((loss,) + output if loss is not None else output) if v is not None)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


__all__ = [
    "MynaClassificationHead",
    "MynaContrastiveOutput",
    "MynaForAudioClassification",
    "MynaForContrastivePretraining",
    "MynaModel",
    "MynaModelOutput",
    "MynaPreTrainedModel",
    "pool_chunks",
    "sincos_position_embedding",
]
