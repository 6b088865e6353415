"""Tests of MynaConfig and the Myna models, in the spirit of transformers' own model tests: tiny configs, CPU."""

import json
import math

import pytest
import torch

from modeling_myna import (
    MynaConfig,
    MynaForAudioClassification,
    MynaForContrastivePretraining,
    MynaModel,
    pool_chunks,
)
from modeling_myna.modeling_myna import num_kept_tokens, sincos_position_embedding
from transformers import AutoConfig, AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining


def tiny_config(variant: str = "hybrid", **overrides) -> MynaConfig:
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64)
    sizes["projection_dim"] = 8
    sizes.update(overrides)
    return MynaConfig.from_variant(variant, **sizes)


def tiny_model(variant: str = "hybrid", seed: int = 0, **overrides) -> MynaModel:
    torch.manual_seed(seed)
    return MynaModel(tiny_config(variant, **overrides)).eval()


def spectrogram(batch: int = 3, frames: int = 96, seed: int = 1) -> torch.Tensor:
    # Power mels span decades; the model must take them raw.
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 128, frames, generator=generator) ** 4 * 1e4


# --- configuration -------------------------------------------------------------------------------------------------


def test_variants_have_the_paper_geometry():
    base, vertical, hybrid = (MynaConfig.from_variant(v) for v in ("base", "vertical", "hybrid"))
    assert base.patch_sizes == [[16, 16]] and base.chunk_frames == 96 and base.default_patch_mode == "square"
    assert vertical.patch_sizes == [[128, 2]] and vertical.chunk_frames == 98 and vertical.default_patch_mode == "vertical"
    assert hybrid.patch_modes == ["square", "vertical"] and hybrid.chunk_frames == 96
    assert hybrid.default_patch_mode == "both" and hybrid.embedding_size() == 768
    # ViT-S: about 21.3M parameters for one tokenizer (SPEC §2), 256 * 384 + more for the second.
    assert abs(MynaModel(base).num_parameters() - 21.3e6) < 0.2e6


def test_config_json_round_trip_is_exact(tmp_path):
    config = tiny_config("hybrid", mask_ratio=0.75)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MynaConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.patch_sizes == config.patch_sizes and loaded.mask_ratio == 0.75
    assert json.loads((tmp_path / "config.json").read_text())["patch_sizes"] == [[16, 16], [128, 2]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(patch_sizes=[[16, 16], [16, 16]]), "same kind"),
        (dict(patch_sizes=[[15, 16]]), "does not tile"),
        (dict(patch_sizes=[[16, 16], [128, 2], [32, 4]]), "one or two"),
        (dict(default_patch_mode="vertical"), "not one of"),
        (dict(mask_ratio=1.0), "mask_ratio"),
        (dict(input_scale="db"), "input_scale='db': choose one of"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MynaConfig(**kwargs)


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(ValueError, match="base"):
        MynaConfig.from_variant("large")


# --- encoder -------------------------------------------------------------------------------------------------------


def test_a_log_input_model_is_the_power_model_on_the_log_of_the_mel(tmp_path):
    """`input_scale="log"` takes the log inside the model: on the raw power mel it gives exactly what the same weights
    with `input_scale="power"` give on `log(mel + 1e-6)`, in every patch mode; the setting survives
    a save and load; the released models' default stays the raw power."""
    from modeling_myna.configuration_myna import LOG_OFFSET

    assert MynaConfig().input_scale == "power"
    power = tiny_model("hybrid")
    log = tiny_model("hybrid", input_scale="log")
    log.load_state_dict(power.state_dict())
    mel = spectrogram(frames=96)
    mel[0, :, :10] = 0.0  # silence: the log stays finite
    for mode in ("square", "vertical", "both"):
        with torch.no_grad():
            expected = power(torch.log(mel + LOG_OFFSET), patch_mode=mode).pooler_output
            got = log(mel, patch_mode=mode).pooler_output
            raw = power(mel, patch_mode=mode).pooler_output
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        assert torch.isfinite(got).all() and (got - raw).abs().max() > 0.1  # a different model, not a no-op
    log.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.input_scale == "log"
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel).pooler_output, log(mel).pooler_output)


def test_a_mixed_input_model_takes_the_log_in_square_patches_only(tmp_path):
    """`input_scale="mixed"`: the square tokenizer is the log model's, the vertical one the power model's, with the
    same weights; the setting survives a save and load."""
    power = tiny_model("hybrid")
    log = tiny_model("hybrid", input_scale="log")
    mixed = tiny_model("hybrid", input_scale="mixed")
    log.load_state_dict(power.state_dict())
    mixed.load_state_dict(power.state_dict())
    mel = spectrogram(frames=96)
    with torch.no_grad():
        torch.testing.assert_close(
            mixed(mel, patch_mode="square").pooler_output, log(mel, patch_mode="square").pooler_output
        )
        torch.testing.assert_close(
            mixed(mel, patch_mode="vertical").pooler_output, power(mel, patch_mode="vertical").pooler_output
        )
        both = mixed(mel, patch_mode="both").pooler_output
        assert (both - log(mel, patch_mode="both").pooler_output).abs().max() > 0.1
        assert (both - power(mel, patch_mode="both").pooler_output).abs().max() > 0.1
    vertical_only = tiny_model("vertical", input_scale="mixed")
    assert [tokenizer.log_input for tokenizer in vertical_only.embeddings.patch_embeddings] == [False]
    mixed.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert loaded.config.input_scale == "mixed"
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel).pooler_output, mixed(mel).pooler_output)


def test_sincos_embedding_matches_its_formula():
    table = sincos_position_embedding(3, 5, 16)
    assert table.shape == (15, 16)
    omega = 1.0 / 10000 ** (torch.arange(4) / 3)
    y, x = 2, 3  # token 2 * 5 + 3
    expected = torch.cat([torch.sin(x * omega), torch.cos(x * omega), torch.sin(y * omega), torch.cos(y * omega)])
    torch.testing.assert_close(table[2 * 5 + 3], expected)


def test_outputs_shapes_and_pooling():
    model = tiny_model("base")
    output = model(spectrogram(frames=96))
    assert output.last_hidden_state.shape == (3, 48, 32)  # 8 x 6 square patches
    assert output.pooler_output.shape == (3, 32)
    torch.testing.assert_close(output.pooler_output, output.last_hidden_state.mean(dim=1))


def test_determinism_and_batch_equals_single_rows():
    model = tiny_model("hybrid")
    inputs = spectrogram(batch=4)
    with torch.no_grad():
        first, second = model(inputs).pooler_output, model(inputs).pooler_output
        rows = torch.cat([model(inputs[i : i + 1]).pooler_output for i in range(4)])
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    torch.testing.assert_close(first, rows, rtol=1e-5, atol=1e-5)


def test_tuple_and_dict_outputs_agree():
    model = tiny_model("base")
    inputs = spectrogram()
    as_dict = model(inputs, output_hidden_states=True, output_attentions=True)
    as_tuple = model(inputs, output_hidden_states=True, output_attentions=True, return_dict=False)
    assert len(as_tuple) == 4
    torch.testing.assert_close(as_tuple[0], as_dict.last_hidden_state)
    torch.testing.assert_close(as_tuple[1], as_dict.pooler_output)
    assert len(as_tuple[2]) == len(as_dict.hidden_states) and len(as_tuple[3]) == len(as_dict.attentions)
    assert len(model(inputs, return_dict=False)) == 2


def test_hidden_states_and_attentions():
    model = tiny_model("base")
    output = model(spectrogram(), output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == 3  # embeddings + one per block
    assert all(h.shape == (3, 48, 32) for h in output.hidden_states)
    assert len(output.attentions) == 2 and output.attentions[0].shape == (3, 2, 48, 48)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(3, 2, 48))
    # The last hidden state is the final block's output after the final LayerNorm.
    torch.testing.assert_close(output.last_hidden_state, model.layernorm(output.hidden_states[-1]))


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    eager = MynaModel._from_config(tiny_config("hybrid"), attn_implementation="eager").eval()
    sdpa = MynaModel._from_config(tiny_config("hybrid"), attn_implementation="sdpa").eval()
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    inputs = spectrogram()
    with torch.no_grad():
        torch.testing.assert_close(sdpa(inputs).last_hidden_state, eager(inputs).last_hidden_state, rtol=1e-5, atol=1e-5)
        # Asking SDPA for weights takes the eager path for that call, and still returns real weights.
        weights = sdpa(inputs, patch_mode="square", output_attentions=True).attentions
    assert weights[0] is not None and weights[0].shape == (3, 2, 48, 48)


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = spectrogram(batch=2)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("base", seed=3).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.encoder.layers)
        model(inputs).pooler_output.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_variable_lengths_drop_the_partial_patch():
    model = tiny_model("base")
    long = spectrogram(batch=2, frames=200)
    with torch.no_grad():
        output = model(long)
        cropped = model(long[..., :192])  # 200 // 16 * 16
    assert output.last_hidden_state.shape == (2, 8 * 12, 32)
    torch.testing.assert_close(output.last_hidden_state, cropped.last_hidden_state)
    # Longer inputs get positions beyond the training grid, computed on the fly and cached per grid.
    assert (8, 12, "cpu") in model.embeddings._position_cache
    cached = model.embeddings._position_cache[(8, 12, "cpu")]
    model(long)
    assert model.embeddings._position_cache[(8, 12, "cpu")] is cached


def test_too_short_or_misshaped_inputs_are_refused():
    model = tiny_model("hybrid")
    with pytest.raises(ValueError, match="fewer than one patch"):
        model(spectrogram(frames=10), patch_mode="square")
    with pytest.raises(ValueError, match=r"\(batch, 128, frames\)"):
        model(torch.rand(2, 64, 96))
    with pytest.raises(ValueError, match="patch_mode"):
        model(spectrogram(), patch_mode="diagonal")
    # Ten frames are enough for vertical (2-frame) patches.
    assert model(spectrogram(frames=10), patch_mode="vertical").last_hidden_state.shape == (3, 5, 32)


@pytest.mark.parametrize("frames", [98, 96])  # 48 + 49 tokens: two encoder passes; 48 + 48: one joint pass
def test_hybrid_modes(frames):
    model = tiny_model("hybrid")
    inputs = spectrogram(frames=frames)
    num_vertical = frames // 2
    with torch.no_grad():
        square = model(inputs, patch_mode="square")
        vertical = model(inputs, patch_mode="vertical")
        both = model(inputs, patch_mode="both", output_attentions=True, output_hidden_states=True)
    assert square.last_hidden_state.shape == (3, 48, 32)  # 98 frames -> 6 columns of 16
    assert vertical.last_hidden_state.shape == (3, num_vertical, 32)
    torch.testing.assert_close(both.pooler_output, torch.cat([square.pooler_output, vertical.pooler_output], -1))
    torch.testing.assert_close(
        both.last_hidden_state, torch.cat([square.last_hidden_state, vertical.last_hidden_state], 1)
    )
    assert both.hidden_states[0].shape == (3, 48 + num_vertical, 32)
    torch.testing.assert_close(both.hidden_states[2][:, 48:], model(inputs, patch_mode="vertical", output_hidden_states=True).hidden_states[2])
    attention = both.attentions[1]
    assert attention.shape == (3, 2, 48 + num_vertical, 48 + num_vertical)
    assert attention[..., :48, 48:].abs().max() == 0 and attention[..., 48:, :48].abs().max() == 0
    assert not torch.equal(square.pooler_output, vertical.pooler_output)


def _encoder_calls(model: MynaModel) -> list[tuple[int, ...]]:
    """Records the input shape of every encoder pass of `model`."""
    calls = []
    model.encoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape)))
    return calls


@pytest.mark.parametrize("frames", [96, 98])
def test_both_equals_the_separate_passes_in_every_layout(frames):
    # "both" is the square and the vertical encodings side by side, whichever layout runs it: one (2B, N, D) batch
    # without a mask (96 frames: 48 and 48 tokens), one pass per tokenizer (98 frames: 48 and 49), or the joint
    # [square ; vertical] sequence under a block-diagonal mask when per-layer outputs are asked for.
    model = tiny_model("hybrid", seed=3)
    inputs = spectrogram(batch=5, frames=frames, seed=4)
    calls = _encoder_calls(model)
    with torch.no_grad():
        square = model(inputs, patch_mode="square")
        vertical = model(inputs, patch_mode="vertical")
        calls.clear()
        both = model(inputs, patch_mode="both")
        fast_calls = list(calls)
        joint = model(inputs, patch_mode="both", output_hidden_states=True)
    num_vertical = frames // 2
    assert fast_calls == ([(10, 48, 32)] if frames == 96 else [(5, 48, 32), (5, num_vertical, 32)])
    assert calls[-1] == (5, 48 + num_vertical, 32)  # the joint sequence, for the per-layer outputs
    expected_pooled = torch.cat([square.pooler_output, vertical.pooler_output], -1)
    expected_tokens = torch.cat([square.last_hidden_state, vertical.last_hidden_state], 1)
    for output in (both, joint):
        torch.testing.assert_close(output.pooler_output, expected_pooled, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(output.last_hidden_state, expected_tokens, rtol=1e-5, atol=1e-5)
    assert both.pooler_output.shape == (5, 64) and both.hidden_states is None
    # The two tokenizers really differ, so the equality above is not that of two copies.
    assert (square.pooler_output - vertical.pooler_output).abs().max() > 1e-2


def test_large_cpu_inference_batches_run_in_pieces_with_the_same_outputs(monkeypatch):
    import modeling_myna.modeling_myna as modeling

    model = tiny_model("hybrid", seed=5)
    inputs = spectrogram(batch=7, seed=6)
    with torch.no_grad():
        whole = model(inputs, patch_mode="both")
    # Each pass may hold 3 sequences' widest activation (48 tokens x 96 qkv values x 4 bytes each).
    monkeypatch.setattr(modeling, "CPU_INFERENCE_PIECE_BYTES", 3 * 48 * 96 * 4)
    calls = _encoder_calls(model)
    with torch.no_grad():
        pieces = model(inputs, patch_mode="both")
        square = model(inputs, patch_mode="square")
    assert [c[0] for c in calls] == [3, 3, 3, 3, 2] + [3, 2, 2]  # 14 rows in 5 pieces, then 7 rows in 3
    torch.testing.assert_close(pieces.pooler_output, whole.pooler_output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pieces.last_hidden_state, whole.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(square.pooler_output, whole.pooler_output[:, :32], rtol=1e-5, atol=1e-5)
    # With gradients (training), one pass whatever the size: autograd keeps every activation anyway.
    calls.clear()
    model(inputs, patch_mode="both").pooler_output.sum().backward()
    assert calls == [(14, 48, 32)]


# --- masking -------------------------------------------------------------------------------------------------------


def test_kept_token_count_follows_the_paper():
    assert num_kept_tokens(48, 0.9) == 5
    assert num_kept_tokens(49, 0.9) == 49 - int(0.9 * 49)
    assert num_kept_tokens(48, 0.0) == 48


def test_masking_keeps_unique_tokens_with_fixed_noise_giving_a_fixed_mask():
    model = tiny_model("base")
    inputs = spectrogram(batch=4)
    tokens, _ = model.embeddings(inputs)  # (4, 48, D) unmasked
    noise = torch.rand(4, 48, generator=torch.Generator().manual_seed(5))
    kept, ids_keep = model.embeddings(inputs, mask_ratio=0.9, noise=noise)
    assert kept.shape == (4, 5, 32) and ids_keep.shape == (4, 5)
    assert all(len(set(row.tolist())) == 5 for row in ids_keep)
    # The kept tokens are those with the smallest noise, and they are the unmasked tokens at those positions.
    torch.testing.assert_close(ids_keep.sort(1).values, noise.topk(5, largest=False).indices.sort(1).values)
    torch.testing.assert_close(kept, tokens[torch.arange(4)[:, None], ids_keep])
    again, ids_again = model.embeddings(inputs, mask_ratio=0.9, noise=noise)
    assert torch.equal(ids_again, ids_keep) and torch.equal(again, kept)
    # Random masks differ between examples and between calls.
    _, random_ids = model.embeddings(inputs, mask_ratio=0.9)
    assert not torch.equal(random_ids, ids_keep)


def test_masked_forward_encodes_only_kept_tokens():
    model = tiny_model("base")
    inputs = spectrogram(batch=2)
    noise = torch.rand(2, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(inputs, mask_ratio=0.9, noise=noise)
    assert output.last_hidden_state.shape == (2, 5, 32)
    # Which tokens: the 5 of smallest noise, in increasing noise order, and the state of each is the encoder's output
    # on exactly those tokens of the full grid (computed here from the unmasked embeddings).
    kept = noise.argsort(1)[:, :5]
    assert torch.equal(output.ids_keep, kept)
    with torch.no_grad():
        all_tokens, _ = model.embeddings(inputs)  # (2, 48, 32): every token, positions added
        expected = model.layernorm(model.encoder(all_tokens.gather(1, kept[..., None].expand(-1, -1, 32)))[0])
    torch.testing.assert_close(output.last_hidden_state, expected, rtol=1e-6, atol=1e-6)
    # Only the kept patches are seen: changing a dropped patch changes nothing, changing a kept one does.
    row, column = divmod(int(noise[0].argsort()[-1]), 6)  # the token of largest noise: dropped
    dropped = inputs.clone()
    dropped[0, row * 16 : (row + 1) * 16, column * 16 : (column + 1) * 16] = spectrogram(1, 16, seed=9)[0, :16]
    row, column = divmod(int(kept[0, 0]), 6)
    changed = inputs.clone()
    changed[0, row * 16 : (row + 1) * 16, column * 16 : (column + 1) * 16] = spectrogram(1, 16, seed=9)[0, :16]
    with torch.no_grad():
        assert torch.equal(model(dropped, mask_ratio=0.9, noise=noise).last_hidden_state, output.last_hidden_state)
        assert not torch.allclose(model(changed, mask_ratio=0.9, noise=noise).last_hidden_state[0],
                                  output.last_hidden_state[0])
    with pytest.raises(ValueError, match="noise has shape"):
        model(inputs, noise=torch.rand(2, 47))


# --- heads ---------------------------------------------------------------------------------------------------------


def test_contrastive_head_projects_masked_views_and_averages_tokenizer_losses():
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(tiny_config("hybrid")).train()
    views = [spectrogram(batch=4, seed=1), spectrogram(batch=4, seed=2)]
    calls = []

    def loss_fn(z1, z2, tokenizer, scale=1.0):
        calls.append((z1.shape, z2.shape, tokenizer))
        return scale * (z1 - z2).square().mean()

    output = model(views, loss_fn=loss_fn, scale=2.0)
    assert calls == [((4, 8), (4, 8), 0), ((4, 8), (4, 8), 1)]  # once per tokenizer
    assert len(output.projections) == 4 and output.embeddings[0].shape == (4, 32)
    p = output.projections
    expected = (2.0 * (p[0] - p[1]).square().mean() + 2.0 * (p[2] - p[3]).square().mean()) / 2
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    assert model.projection.weight.grad is not None
    # Masked views: the encoder saw 5 of 48 tokens; with fixed noise the projections are reproducible.
    noise = [torch.rand(8, 48, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        a = model(views, noise=noise).projections
        b = model(views, noise=noise).projections
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_an_mlp_projection_head_is_linear_gelu_linear_and_saves_with_the_model(tmp_path):
    """`projection_hidden_size > 0`: the projection is Linear -> GELU -> Linear on each tokenizer's pooled
    embedding; the encoder is untouched (AutoModel loads it without the head), the head round-trips through
    AutoModelForPreTraining, and a negative width is refused."""
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(tiny_config("hybrid", projection_hidden_size=24)).train()
    head = model.projection
    assert (head.dense.in_features, head.dense.out_features, head.out_proj.out_features) == (32, 24, 8)
    views = [spectrogram(batch=4, seed=1), spectrogram(batch=4, seed=2)]
    output = model(views, loss_fn=lambda z1, z2, tokenizer: (z1 - z2).square().mean())
    for embedding, projection in zip(output.embeddings, output.projections):
        expected = head.out_proj(torch.nn.functional.gelu(head.dense(embedding)))
        torch.testing.assert_close(projection, expected)
    output.loss.backward()
    assert head.dense.weight.grad.abs().sum() > 0 and head.out_proj.weight.grad.abs().sum() > 0
    model.eval().save_pretrained(tmp_path)
    inputs = spectrogram()
    with torch.no_grad():
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(encoder(inputs).pooler_output, model.myna(inputs).pooler_output)
        loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(loaded.projection.dense.weight, head.dense.weight)
        torch.testing.assert_close(loaded.projection.out_proj.bias, head.out_proj.bias)
    with pytest.raises(ValueError, match="projection_hidden_size=-1: give 0"):
        tiny_config("hybrid", projection_hidden_size=-1)


@pytest.mark.parametrize(
    "problem_type, labels",
    [
        ("single_label_classification", torch.tensor([0, 2])),
        ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])),
        ("regression", torch.tensor([[0.5, -1.0, 0.0], [1.0, 0.2, 0.3]])),
    ],
)
def test_audio_classification_averages_chunks_per_input(problem_type, labels):
    torch.manual_seed(0)
    model = MynaForAudioClassification(tiny_config("hybrid", num_labels=3, problem_type=problem_type)).eval()
    chunks = spectrogram(batch=5)
    audio_index = torch.tensor([0, 0, 0, 1, 1])
    per_chunk = model(chunks).logits
    output = model(chunks, audio_index=audio_index, labels=labels)
    assert per_chunk.shape == (5, 3) and output.logits.shape == (2, 3)
    torch.testing.assert_close(output.logits[0], per_chunk[:3].mean(0))
    torch.testing.assert_close(output.logits[1], per_chunk[3:].mean(0))
    logits = output.logits
    expected = {
        "single_label_classification": lambda: torch.nn.functional.cross_entropy(logits, labels),
        "multi_label_classification": lambda: torch.nn.functional.binary_cross_entropy_with_logits(logits, labels),
        "regression": lambda: torch.nn.functional.mse_loss(logits, labels),
    }[problem_type]()
    torch.testing.assert_close(output.loss, expected)


def test_pool_chunks_means_rows_per_audio():
    values = torch.arange(12.0).view(6, 2)
    pooled = pool_chunks(values, torch.tensor([0, 0, 1, 2, 2, 2]))
    torch.testing.assert_close(pooled, torch.tensor([[1.0, 2.0], [4.0, 5.0], [8.0, 9.0]]))


# --- save / load ---------------------------------------------------------------------------------------------------


def test_save_load_round_trip_through_auto_classes(tmp_path):
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(tiny_config("hybrid")).eval()
    model.save_pretrained(tmp_path)
    saved = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "modeling_myna.py", "configuration_myna.py"} <= saved
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_myna.MynaModel"
    inputs = spectrogram()
    with torch.no_grad():
        expected = model.myna(inputs).pooler_output
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        pretraining = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(encoder(inputs).pooler_output, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(pretraining.projection.weight, model.projection.weight)
    assert isinstance(encoder, MynaModel) and isinstance(pretraining, MynaForContrastivePretraining)
    classifier = AutoModelForAudioClassification.from_pretrained(tmp_path, num_labels=4)
    assert isinstance(classifier, MynaForAudioClassification) and classifier.classifier.out_features == 4
    torch.testing.assert_close(classifier.myna.layernorm.weight, model.myna.layernorm.weight)
    card = (tmp_path / "README.md").read_text()
    assert "Myna (hybrid)" in card and "2502.12511" in card


def test_remote_code_folder_loads_without_our_package(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    model = MynaModel(tiny_config("base")).eval()
    model.save_pretrained(tmp_path / "model")
    inputs = spectrogram(batch=1)
    torch.save({"inputs": inputs, "expected": model(inputs).pooler_output.detach()}, tmp_path / "io.pt")
    script = f"""
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
assert "modeling_myna" not in [m.split('.')[0] for m in sys.modules], "our package was imported"
io = torch.load({str(tmp_path / 'io.pt')!r})
torch.testing.assert_close(model(io["inputs"]).pooler_output, io["expected"], rtol=1e-5, atol=1e-5)
print(type(model).__module__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().startswith("transformers_modules")


# --- compilation ---------------------------------------------------------------------------------------------------


def test_torch_export_of_the_encoder():
    model = tiny_model("base")
    inputs = spectrogram(batch=2)

    class Encoder(torch.nn.Module):
        def __init__(self, myna):
            super().__init__()
            self.myna = myna

        def forward(self, input_values):
            return self.myna(input_values).pooler_output

    exported = torch.export.export(Encoder(model), (inputs,))
    torch.testing.assert_close(exported.module()(inputs), model(inputs).pooler_output, rtol=1e-5, atol=1e-5)
    # Tracing must not leak traced tensors into the eager cache.
    assert all(isinstance(v, torch.Tensor) and not hasattr(v, "fake_mode") for v in model.embeddings._position_cache.values())
    with torch.no_grad():
        assert math.isfinite(float(model(inputs).pooler_output.sum()))


def test_audio_classification_pipeline_uses_our_feature_extractor(tmp_path):
    import numpy as np

    from modeling_myna import MynaFeatureExtractor
    from transformers import pipeline

    torch.manual_seed(0)
    labels = ["calm", "energetic", "sad"]
    config = tiny_config(
        "base", num_labels=3, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}
    )
    model = MynaForAudioClassification(config).eval()
    model.save_pretrained(tmp_path)
    MynaFeatureExtractor.from_config(config).save_pretrained(tmp_path)

    classifier = pipeline("audio-classification", model=str(tmp_path))
    audio = np.random.default_rng(0).standard_normal(16_000 * 8).astype(np.float32) * 0.1  # 2 chunks
    predictions = classifier(audio, top_k=3)
    assert sorted(p["label"] for p in predictions) == labels
    features = MynaFeatureExtractor.from_config(config)(audio, sampling_rate=16_000, return_tensors="pt")
    assert features["input_values"].shape[0] == 2
    with torch.no_grad():
        expected = model(**features).logits[0].softmax(-1)
    scores = {p["label"]: p["score"] for p in predictions}
    np.testing.assert_allclose([scores[l] for l in labels], expected.numpy(), rtol=1e-5)
