"""PyTorch Myna: a SimpleViT encoder on mel spectrograms with token masking.

Follows Myna (arXiv 2502.12511) and its reference code ghost-signal/myna, itself built on lucidrains'
`simple_vit.py` (Beyer et al. 2022, "Better plain ViT baselines"): square (16x16) or vertical (128x2) patches,
fixed 2D sin-cos positions, pre-norm blocks, mean pooling, no CLS token. Masking follows MAE's `random_masking`
(He et al. 2022): the tokens with the smallest noise are kept, so a fixed `noise` gives a fixed mask.
"""

import os
import tempfile
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_myna import BOTH_PATCH_MODES, MynaConfig
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


class MynaPatchEmbeddings(nn.Module):
    """One tokenizer: cuts `input_values` `(batch, num_mel_bins, frames)` into patches and embeds them.

    Patches are taken row-major over the grid (frequency index major, time index minor); each patch vector is
    flattened frequency-major. LayerNorm -> Linear -> LayerNorm, as SimpleViT.
    """

    def __init__(self, config: MynaConfig, patch_size: list[int]):
        super().__init__()
        self.patch_height, self.patch_width = patch_size
        patch_dim = self.patch_height * self.patch_width
        self.patch_norm = nn.LayerNorm(patch_dim, eps=config.layer_norm_eps)
        self.projection = nn.Linear(patch_dim, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def grid_size(self, num_mel_bins: int, num_frames: int) -> tuple[int, int]:
        return num_mel_bins // self.patch_height, num_frames // self.patch_width

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        batch_size, num_mel_bins, num_frames = input_values.shape
        grid_height, grid_width = self.grid_size(num_mel_bins, num_frames)
        # Frames that do not fill a last patch are dropped, as the reference does.
        patches = input_values[:, :, : grid_width * self.patch_width]
        patches = patches.reshape(batch_size, grid_height, self.patch_height, grid_width, self.patch_width)
        patches = patches.permute(0, 1, 3, 2, 4).reshape(batch_size, grid_height * grid_width, -1)
        return self.norm(self.projection(self.patch_norm(patches)))


class MynaEmbeddings(nn.Module):
    """Tokenizers (one per patch size), fixed sin-cos positions and token masking.

    The positional table depends only on the patch grid, so it is computed once per (grid, device) and cached;
    it is never stored in the checkpoint, so any number of frames can be encoded.
    """

    def __init__(self, config: MynaConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = nn.ModuleList([MynaPatchEmbeddings(config, p) for p in config.patch_sizes])
        self._position_cache: dict[tuple, torch.Tensor] = {}

    def position_embeddings(self, grid_height: int, grid_width: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # Traced graphs constant-fold the table; caching a traced tensor would leak it out of the trace.
            return sincos_position_embedding(grid_height, grid_width, self.config.hidden_size, device=device)
        key = (grid_height, grid_width, str(device))
        if key not in self._position_cache:
            self._position_cache[key] = sincos_position_embedding(
                grid_height, grid_width, self.config.hidden_size, device=device
            )
        return self._position_cache[key]

    def forward(
        self,
        input_values: torch.Tensor,
        tokenizer_index: int = 0,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Returns the `(batch, num_kept, hidden_size)` tokens and, when masking, the `(batch, num_kept)` indices of
        the kept tokens in the full grid (`None` without masking).
        """
        patch_embeddings = self.patch_embeddings[tokenizer_index]
        tokens = patch_embeddings(input_values)  # (B, N, D)
        grid_height, grid_width = patch_embeddings.grid_size(input_values.shape[1], input_values.shape[2])
        positions = self.position_embeddings(grid_height, grid_width, tokens.device)
        tokens = tokens + positions.to(tokens.dtype)

        if noise is None and not mask_ratio:
            return tokens, None
        batch_size, num_tokens, dim = tokens.shape
        if noise is None:
            noise = torch.rand(batch_size, num_tokens, device=tokens.device)
        elif noise.shape != (batch_size, num_tokens):
            raise ValueError(
                f"noise has shape {tuple(noise.shape)} but this input has {num_tokens} tokens per example with the "
                f"{patch_embeddings.patch_height}x{patch_embeddings.patch_width} tokenizer: pass (batch, {num_tokens})."
            )
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        ids_keep = noise.argsort(dim=1)[:, : num_kept_tokens(num_tokens, ratio)]  # (B, K) smallest noise kept
        tokens = tokens.gather(1, ids_keep[..., None].expand(-1, -1, dim))  # (B, K, D) kept tokens
        return tokens, ids_keep


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
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, num_tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, Dh)

        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation != "eager" and not output_attentions:
            # Fused kernels return no weights, so a call that wants them takes the eager path.
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        attn_output, attn_weights = attention_interface(self, query, key, value, None, scaling=self.scaling, dropout=0.0)
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
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + attn_output
        hidden_states = hidden_states + self.mlp(self.layernorm_after(hidden_states))
        return hidden_states, attn_weights


class MynaEncoder(nn.Module):
    def __init__(self, config: MynaConfig):
        super().__init__()
        self.layers = nn.ModuleList([MynaLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, output_attentions)
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


def _split_batch(states: tuple[torch.Tensor, ...] | None, n: int) -> list:
    """Per-layer `(n * B, ...)` tensors -> `n` per-layer tuples of `(B, ...)` (or `n` times `None`)."""
    if states is None:
        return [None] * n
    return list(zip(*(s.chunk(n, dim=0) for s in states)))


def _block_diagonal(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Two `(B, H, N_i, N_i)` attention maps as one `(B, H, N_1 + N_2, N_1 + N_2)` block-diagonal map."""
    n1, n2 = first.shape[-1], second.shape[-1]
    combined = first.new_zeros((*first.shape[:2], n1 + n2, n1 + n2))
    combined[..., :n1, :n1] = first
    combined[..., n1:, n1:] = second
    return combined


class MynaModel(MynaPreTrainedModel):
    """The bare Myna encoder: chunk spectrograms in, per-token states and a mean-pooled embedding out."""

    # Pre-training checkpoints carry the projection; the bare encoder has no use for it.
    _keys_to_ignore_on_load_unexpected = [r"^projection\."]

    def __init__(self, config: MynaConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = MynaEmbeddings(config)
        self.encoder = MynaEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

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

    def _encode(
        self, tokens: list[torch.Tensor], output_attentions: bool, output_hidden_states: bool
    ) -> list[tuple[torch.Tensor, tuple | None, tuple | None]]:
        """Runs the shared encoder over each tokenizer's `(B, N_i, D)` tokens.

        When every tokenizer yields the same number of tokens (48 and 48 for a 96-frame hybrid chunk), they go
        through the encoder as one `(len(tokens) * B, N, D)` batch: the same maths, in larger matrix products.
        """
        if len({t.shape for t in tokens}) == 1 and len(tokens) > 1:
            hidden_states, all_hidden_states, all_attentions = self.encoder(
                torch.cat(tokens, dim=0), output_attentions, output_hidden_states
            )
            n = len(tokens)
            per_hidden, per_attentions = _split_batch(all_hidden_states, n), _split_batch(all_attentions, n)
            return list(zip(self.layernorm(hidden_states).chunk(n, dim=0), per_hidden, per_attentions))
        passes = []
        for hidden_states in tokens:
            hidden_states, all_hidden_states, all_attentions = self.encoder(
                hidden_states, output_attentions, output_hidden_states
            )
            passes.append((self.layernorm(hidden_states), all_hidden_states, all_attentions))
        return passes

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
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch_size, num_mel_bins, num_frames)`):
                Raw power mel spectrograms from [`MynaFeatureExtractor`]. Any number of frames at least one patch
                wide; frames that do not fill a last patch are dropped.
            patch_mode (`str`, *optional*):
                `"square"`, `"vertical"` or, for a hybrid model, `"both"`: the tokens of both tokenizers are encoded
                separately by the shared encoder and concatenated along the sequence (`last_hidden_state`,
                `hidden_states`; attentions become block-diagonal) and the pooled embeddings along the features
                (`[square ; vertical]`, as the reference's hybrid mode). Defaults to `config.default_patch_mode`.
            mask_ratio (`float`, *optional*):
                Drop this fraction of each example's tokens before the encoder (pre-training keeps
                `N - int(0.9 N)`). No masking when neither `mask_ratio` nor `noise` is given.
            noise (`torch.FloatTensor` of shape `(batch_size, num_tokens)`, *optional*):
                Fixes the mask: the tokens with the smallest noise are kept. With `"both"`, a list of one tensor per
                tokenizer. Uses `config.mask_ratio` when `mask_ratio` is not given.
            audio_index (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
                The feature extractor's chunk-to-input mapping. The outputs stay per chunk; [`pool_chunks`]
                averages them per input. It and the extractor's other outputs (`chunk_start_frames`, `num_frames`)
                are accepted so that `model(**features)` works.

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state` `(batch_size, num_tokens, hidden_size)` after the
            final LayerNorm, `pooler_output` `(batch_size, hidden_size)` (twice as wide for `"both"`), the mean of
            the tokens; `hidden_states` (embeddings + one per block) and `attentions` when asked for.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        tokenizer_indices = self._tokenizer_indices(patch_mode)
        self._check_input(input_values, tokenizer_indices)
        input_values = input_values.to(self.embeddings.patch_embeddings[0].projection.weight.dtype)
        if len(tokenizer_indices) == 1 and isinstance(noise, (list, tuple)) and len(noise) == 1:
            noise = noise[0]
        if len(tokenizer_indices) > 1 and noise is not None and not isinstance(noise, (list, tuple)):
            raise ValueError('patch_mode="both" needs one noise tensor per tokenizer: pass a list [square, vertical].')

        tokens = [
            self.embeddings(
                input_values,
                index,
                mask_ratio=mask_ratio,
                noise=noise[i] if isinstance(noise, (list, tuple)) else noise,
            )[0]
            for i, index in enumerate(tokenizer_indices)
        ]
        passes = self._encode(tokens, output_attentions, output_hidden_states)
        last_hidden_state = torch.cat([p[0] for p in passes], dim=1)
        pooler_output = torch.cat([p[0].mean(dim=1) for p in passes], dim=-1)
        all_hidden_states = all_attentions = None
        if output_hidden_states:
            all_hidden_states = tuple(torch.cat(states, dim=1) for states in zip(*(p[1] for p in passes)))
        if output_attentions:
            all_attentions = passes[0][2]
            if len(passes) > 1:
                all_attentions = tuple(_block_diagonal(a, b) for a, b in zip(passes[0][2], passes[1][2]))

        if not return_dict:
            return tuple(
                v for v in (last_hidden_state, pooler_output, all_hidden_states, all_attentions) if v is not None
            )
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooler_output,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


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
    """

    loss: torch.FloatTensor | None = None
    projections: tuple[torch.FloatTensor, ...] | None = None
    embeddings: tuple[torch.FloatTensor, ...] | None = None


class MynaForContrastivePretraining(MynaPreTrainedModel):
    """Myna with its pre-training projection (`linear_head` of the reference code).

    Each view is masked (`config.mask_ratio`, 90%), encoded, mean-pooled and projected; the contrastive loss
    lives in `training/losses.py` and is handed in as `loss_fn`, so one loss object (which may carry SogCLR state
    or a process group) serves every tokenizer.
    """

    def __init__(self, config: MynaConfig):
        super().__init__(config)
        self.myna = MynaModel(config)
        self.projection = nn.Linear(config.hidden_size, config.projection_dim)
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
                is the mean of the per-tokenizer losses, as in the reference code.
            mask_ratio (`float`, *optional*):
                Defaults to `config.mask_ratio`; pass 0 for unmasked views.
            noise (`torch.FloatTensor` or `list[torch.FloatTensor]`, *optional*):
                Fixes the masks: a `(num_views * batch_size, num_tokens)` tensor, rows ordered view-major; for
                `"both"`, a list with one such tensor per tokenizer.
            loss_fn (`Callable`, *optional*):
                Called as `loss_fn(*projections_of_one_tokenizer, tokenizer=k, **loss_kwargs)` once per tokenizer
                (`k` its index in `config.patch_sizes`, so a stateful loss such as SogCLR can keep one state per
                tokenizer); `loss` is the mean over tokenizers, as in the reference code.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        if len({tuple(v.shape) for v in views}) != 1:
            raise ValueError(
                f"views must share one shape to be encoded as one batch, got {[tuple(v.shape) for v in views]}: "
                "crop every view to the same number of frames."
            )
        stacked = torch.cat(list(views), dim=0)  # (V * B, F, T)

        # (V * B, T * D): every view through every tokenizer in one call, [square ; vertical] for "both".
        pooled = self.myna(
            stacked, patch_mode=patch_mode, mask_ratio=mask_ratio, noise=noise, return_dict=True
        ).pooler_output
        projections, embeddings, losses = [], [], []
        tokenizer_indices = self.myna._tokenizer_indices(patch_mode)
        for tokenizer, tokenizer_pooled in zip(tokenizer_indices, pooled.split(self.config.hidden_size, dim=-1)):
            tokenizer_projections = self.projection(tokenizer_pooled).chunk(len(views), dim=0)  # V x (B, P)
            embeddings.extend(tokenizer_pooled.chunk(len(views), dim=0))
            projections.extend(tokenizer_projections)
            if loss_fn is not None:
                losses.append(loss_fn(*tokenizer_projections, tokenizer=tokenizer, **loss_kwargs))

        loss = torch.stack(losses).mean() if losses else None
        if not return_dict:
            return tuple(v for v in (loss, tuple(projections), tuple(embeddings)) if v is not None)
        return MynaContrastiveOutput(loss=loss, projections=tuple(projections), embeddings=tuple(embeddings))


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
    "MynaPreTrainedModel",
    "pool_chunks",
    "sincos_position_embedding",
]
