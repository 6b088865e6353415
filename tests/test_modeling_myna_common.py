"""What transformers' common model tests check, run on Myna's models: export, compile, attention implementations,
gradients through per-layer outputs, input-embedding hooks, loading across heads, and the feature extractor's
transformers API. Tiny configs, CPU; square ("base") and hybrid configurations."""

import inspect
import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch

from modeling_myna import (
    MynaConfig,
    MynaFeatureExtractor,
    MynaForAudioClassification,
    MynaForContrastivePretraining,
    MynaModel,
)
from modeling_myna import modeling_myna as modeling
from transformers import AutoModel


HEADS = (MynaModel, MynaForAudioClassification, MynaForContrastivePretraining)


def tiny_config(variant: str = "hybrid", **overrides) -> MynaConfig:
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64)
    return MynaConfig.from_variant(variant, projection_dim=8, **{**sizes, **overrides})


def build(cls=MynaModel, variant: str = "hybrid", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(variant, **overrides)).eval()


def spectrogram(batch: int = 2, frames: int = 96, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 128, frames, generator=generator) ** 4 * 1e4


# --- torch.export -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "hybrid"])
@pytest.mark.parametrize("cls", [MynaModel, MynaForAudioClassification])
def test_export_with_a_dynamic_batch(cls, variant):
    model = build(cls, variant, num_labels=3)
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(
        model, args=(spectrogram(batch=2),), dynamic_shapes={"input_values": {0: batch}}, strict=False
    )
    inputs = spectrogram(batch=5, seed=7)  # another batch size than the example's
    with torch.no_grad():
        expected = model(inputs)
    outputs = exported.module()(inputs)
    name = "pooler_output" if cls is MynaModel else "logits"
    torch.testing.assert_close(outputs[name], expected[name], rtol=1e-5, atol=1e-5)
    # The trace leaves no fake tensor in the eager position cache.
    assert all(type(t) is torch.Tensor for t in _encoder(model).embeddings._position_cache.values())


# --- attention implementations ------------------------------------------------------------------------------------


def test_set_attn_implementation_round_trips_on_every_head():
    for cls in HEADS:
        model = build(cls)
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        assert all(layer.attention.config._attn_implementation == "eager" for layer in _layers(model))
        model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "sdpa"


def _encoder(model) -> MynaModel:
    return model if isinstance(model, MynaModel) else model.myna


def _layers(model):
    return _encoder(model).encoder.layers


@pytest.mark.parametrize("variant", ["base", "hybrid"])
def test_a_real_eager_model_matches_sdpa(monkeypatch, variant):
    calls = []
    eager_forward = modeling.eager_attention_forward
    monkeypatch.setattr(
        modeling, "eager_attention_forward", lambda *args, **kwargs: calls.append(1) or eager_forward(*args, **kwargs)
    )
    model = build(MynaModel, variant)
    inputs = spectrogram(batch=3)
    with torch.no_grad():
        sdpa = model(inputs).last_hidden_state
        assert calls == []  # SDPA really is SDPA
        model.set_attn_implementation("eager")
        eager = model(inputs).last_hidden_state
    assert len(calls) == 2  # two layers, eager (a hybrid's equal token counts share one pass)
    torch.testing.assert_close(eager, sdpa, rtol=1e-5, atol=1e-5)
    assert not torch.equal(eager, torch.zeros_like(eager))


# --- gradients through per-layer outputs --------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "hybrid"])
def test_retain_grad_on_hidden_states_and_attentions(variant):
    model = build(MynaModel, variant).train()
    outputs = model(spectrogram(), output_hidden_states=True, output_attentions=True)
    hidden_states, attentions = outputs.hidden_states[0], outputs.attentions[0]
    hidden_states.retain_grad()
    attentions.retain_grad()
    outputs.last_hidden_state.flatten()[0].backward(retain_graph=True)
    assert hidden_states.grad is not None and attentions.grad is not None
    assert hidden_states.grad.abs().sum() > 0 and attentions.grad.abs().sum() > 0


def test_both_tokenizers_stay_independent_in_the_joint_sequence():
    # "both" with per-layer outputs is one sequence [square ; vertical] under a block-diagonal mask: a vertical
    # token's output depends on vertical tokens only, and the per-layer states are the graph's own tensors.
    model = build(MynaModel, "hybrid").train()
    outputs = model(spectrogram(frames=98), output_hidden_states=True)  # 48 square + 49 vertical tokens
    embeddings = outputs.hidden_states[0]
    assert embeddings.shape == (2, 97, 32)
    embeddings.retain_grad()
    weights = torch.randn(32, generator=torch.Generator().manual_seed(0))  # a plain sum of LayerNorm outputs is flat
    (outputs.last_hidden_state[:, -1] * weights).sum().backward()
    assert embeddings.grad[:, :48].abs().max() == 0 and embeddings.grad[:, 48:].abs().max() > 0
    with torch.no_grad():
        fast = model(spectrogram(frames=98))
    torch.testing.assert_close(outputs.last_hidden_state, fast.last_hidden_state, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.pooler_output, fast.pooler_output, rtol=1e-5, atol=1e-5)


# --- input embeddings, PEFT hooks, gradient checkpointing --------------------------------------------------------


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")  # the unhooked run, on purpose
@pytest.mark.parametrize("patch_mode", ["square", "vertical", "both"])
def test_enable_input_require_grads_with_frozen_tokenizers_and_checkpointing(patch_mode, caplog):
    inputs = spectrogram()
    grads = {}
    for hooked in (False, True):
        model = build(MynaForContrastivePretraining, "hybrid").train()
        embeddings = model.get_input_embeddings()
        assert embeddings is model.myna.embeddings.patch_embeddings and len(embeddings) == 2
        embeddings.requires_grad_(False)  # frozen, as under LoRA
        # Reentrant checkpointing only back-propagates into a block whose input requires grad.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
        if hooked:
            with caplog.at_level(logging.WARNING):
                model.enable_input_require_grads()
            assert "does not expose input embeddings" not in caplog.text
        model([inputs, inputs], patch_mode=patch_mode, mask_ratio=0.0).projections[0].square().sum().backward()
        grads[hooked] = model.myna.encoder.layers[0].attention.qkv.weight.grad
        assert model.projection.weight.grad is not None
        assert all(p.grad is None for p in embeddings.parameters())
    assert grads[False] is None
    assert grads[True] is not None and grads[True].abs().sum() > 0


def test_set_input_embeddings_replaces_the_tokenizers():
    model = build(MynaModel, "base")
    other = build(MynaModel, "base", seed=5).get_input_embeddings()
    model.set_input_embeddings(other)
    assert model.get_input_embeddings() is other and model.embeddings.patch_embeddings is other


# --- signatures ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", HEADS)
def test_main_input_name_is_the_first_forward_argument(cls):
    first = list(inspect.signature(cls.forward).parameters)[1]
    assert cls.main_input_name == first


# --- torch.compile ------------------------------------------------------------------------------------------------


def _training_step_gradients(model, step, compile_backend: str | None):
    function = torch.compile(step, fullgraph=True, backend=compile_backend) if compile_backend else step
    model.zero_grad()
    loss = function(model, *STEP_INPUTS[step.__name__])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _contrastive_step(model, views, noise):
    return model(views, noise=noise, loss_fn=lambda a, b, tokenizer: (a - b).square().mean()).loss


def _classification_step(model, input_values, labels):
    return model(input_values, labels=labels).loss


STEP_INPUTS = {
    "_contrastive_step": (
        [spectrogram(batch=2, seed=1), spectrogram(batch=2, seed=2)],
        [torch.rand(4, 48, generator=torch.Generator().manual_seed(i)) for i in range(2)],
    ),
    "_classification_step": (spectrogram(batch=3), torch.tensor([0, 2, 1])),
}


@pytest.mark.parametrize(
    "backend",
    ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)],  # inductor compiles C++: minutes on 2 cores
)
@pytest.mark.parametrize(
    "head, step",
    [(MynaForContrastivePretraining, _contrastive_step), (MynaForAudioClassification, _classification_step)],
)
def test_compiled_training_step_gives_eager_gradients(backend, head, step):
    torch._dynamo.reset()
    model = build(head, "hybrid", num_labels=3).train()
    eager_loss, eager_grads = _training_step_gradients(model, step, None)
    compiled_loss, compiled_grads = _training_step_gradients(model, step, backend)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) > 10
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# --- loading across heads -----------------------------------------------------------------------------------------


def test_mismatched_head_sizes_load_with_ignore_mismatched_sizes(tmp_path):
    model = build(MynaForAudioClassification, "base", num_labels=3)
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        MynaForAudioClassification.from_pretrained(tmp_path, num_labels=5)
    loaded, info = MynaForAudioClassification.from_pretrained(
        tmp_path, num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert loaded.classifier.weight.shape == (5, 32)
    assert {key for key, *_ in info["mismatched_keys"]} == {"classifier.weight", "classifier.bias"}
    for name, parameter in model.myna.state_dict().items():
        torch.testing.assert_close(loaded.myna.state_dict()[name], parameter, msg=name)


@pytest.mark.parametrize("cls", HEADS)
def test_base_weights_load_into_every_head(tmp_path, cls):
    base = build(MynaModel, "hybrid")
    base.save_pretrained(tmp_path)
    head, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert all(k.startswith(("classifier.", "projection.")) for k in info["missing_keys"])
    encoder = head if cls is MynaModel else head.myna
    for name, parameter in base.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[name], parameter, rtol=0, atol=0, msg=name)
    inputs = spectrogram()
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(inputs).pooler_output, base(inputs).pooler_output)
    assert isinstance(AutoModel.from_pretrained(tmp_path), MynaModel)


@pytest.mark.parametrize(
    "num_labels, labels, problem_type, loss",
    [
        (3, torch.tensor([0, 2]), "single_label_classification", torch.nn.functional.cross_entropy),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification",
         torch.nn.functional.binary_cross_entropy_with_logits),
        (1, torch.tensor([0.5, -1.0]), "regression", lambda x, y: torch.nn.functional.mse_loss(x.squeeze(), y)),
    ],
)
def test_problem_type_is_inferred_from_labels(num_labels, labels, problem_type, loss):
    model = build(MynaForAudioClassification, "base", num_labels=num_labels)
    assert model.config.problem_type is None
    output = model(spectrogram(), labels=labels)
    assert model.config.problem_type == problem_type
    torch.testing.assert_close(output.loss, loss(output.logits, labels))


# --- float16 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "hybrid"])
def test_float16_weights_give_finite_embeddings_close_to_float32(variant):
    model = build(MynaModel, variant)
    inputs = spectrogram(batch=2) * 100  # up to 1e6, as full-scale music: past float16's 65504
    assert inputs.max() > 65504
    with torch.no_grad():
        full = model(inputs).pooler_output
        half = model.half()(inputs).pooler_output
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=2e-2, atol=2e-2)
    # Values past 65504 overflow in a cast to float16: refused with the fix, never NaN embeddings.
    with pytest.raises(ValueError, match=r"input_values is float16 and holds inf or NaN: .* Pass the feature "):
        model(inputs.half())


@pytest.mark.parametrize("variant", ["base", "hybrid"])
@pytest.mark.parametrize("weights", [torch.float32, torch.float16])
def test_float16_input_values_are_accepted_and_computed_in_float32(variant, weights):
    # What transformers' pipelines and common tests do: cast the extractor's output to the model's dtype. Music in
    # [-1, 1] stays below float16's 65504 (a full-scale sine peaks near 1.4e4), and the tokenizers compute in
    # float32, so float16 input gives the embeddings of the same values in float32.
    model = build(MynaModel, variant).to(weights)
    inputs = (spectrogram(batch=2) * 6).half()  # up to 6e4: representable
    assert inputs.float().max() > 3e4
    with torch.no_grad():
        from_half = model(inputs).pooler_output
        from_float = model(inputs.float()).pooler_output
    assert from_half.dtype == weights
    torch.testing.assert_close(from_half, from_float, rtol=0, atol=0)


# --- masking outputs ----------------------------------------------------------------------------------------------


def test_masked_forward_tokenizes_only_the_kept_patches_and_equals_gathering_after():
    model = build(MynaModel, "base")
    inputs = spectrogram(batch=3)
    noise = torch.rand(3, 48, generator=torch.Generator().manual_seed(4))
    seen = []
    model.embeddings.patch_embeddings[0].projection.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    with torch.no_grad():
        output = model(inputs, mask_ratio=0.9, noise=noise)
        ids_keep = noise.argsort(1)[:, :5]  # the documented noise semantics
        # Before: all 48 patches tokenized, positions added, then 43 dropped.
        tokenizer = model.embeddings.patch_embeddings[0]
        all_tokens = tokenizer(inputs) + model.embeddings.position_embeddings(8, 6, inputs.device)
        kept = all_tokens.gather(1, ids_keep[..., None].expand(-1, -1, 32))
        expected = model.layernorm(model.encoder(kept)[0])
    assert seen[0] == (3, 5, 256)  # the tokenizer ran on 5 tokens, not 48
    assert torch.equal(output.ids_keep, ids_keep)
    torch.testing.assert_close(output.last_hidden_state, expected, rtol=1e-6, atol=1e-6)


def test_ids_keep_index_the_joint_sequence_for_both():
    model = build(MynaModel, "hybrid")
    inputs = spectrogram(frames=98)  # 48 square, 49 vertical tokens
    noise = [torch.rand(2, 48, generator=torch.Generator().manual_seed(0)), torch.rand(2, 49)]
    with torch.no_grad():
        output = model(inputs, patch_mode="both", mask_ratio=0.9, noise=noise)
        unmasked = model(inputs, patch_mode="both", output_hidden_states=True)
    square_kept, vertical_kept = 48 - int(0.9 * 48), 49 - int(0.9 * 49)
    assert output.ids_keep.shape == (2, square_kept + vertical_kept)
    torch.testing.assert_close(output.ids_keep[:, :square_kept], noise[0].argsort(1)[:, :square_kept])
    torch.testing.assert_close(output.ids_keep[:, square_kept:], noise[1].argsort(1)[:, :vertical_kept] + 48)
    # The embeddings at those indices of the joint sequence are the tokens the encoder saw.
    tokens = unmasked.hidden_states[0]
    gathered = tokens.gather(1, output.ids_keep[..., None].expand(-1, -1, 32))
    square_tokens, _ = model.embeddings(inputs, 0, 0.9, noise[0])
    torch.testing.assert_close(gathered[:, :square_kept], square_tokens)
    assert model(inputs).ids_keep is None and len(model(inputs, return_dict=False)) == 2


def test_noise_with_mask_ratio_zero_keeps_the_grid_order():
    model = build(MynaModel, "base")
    inputs = spectrogram()
    with torch.no_grad():
        plain = model(inputs)
        with_noise = model(inputs, mask_ratio=0.0, noise=torch.rand(2, 48))
    assert with_noise.ids_keep is None
    torch.testing.assert_close(with_noise.last_hidden_state, plain.last_hidden_state, rtol=0, atol=0)


# --- bounded position cache ---------------------------------------------------------------------------------------


def test_position_cache_is_bounded_and_least_recently_used_goes_first(monkeypatch):
    model = build(MynaModel, "base")
    token_bytes = 32 * 4  # one float32 row of a 32-wide table
    monkeypatch.setattr(modeling, "POSITION_CACHE_BYTES", 320 * token_bytes)
    embeddings, cpu = model.embeddings, torch.device("cpu")

    def cached_grids():
        return [key[1] for key in embeddings._position_cache]

    for width in (10, 11, 12):  # 80 + 88 + 96 tokens
        embeddings.position_embeddings(8, width, cpu)
    embeddings.position_embeddings(8, 10, cpu)  # used again: now the most recent
    embeddings.position_embeddings(8, 13, cpu)  # 104 more: over the budget, the least recently used goes
    assert cached_grids() == [12, 10, 13]
    for width in range(1, 40):  # many input lengths
        embeddings.position_embeddings(8, width, cpu)
    cached = sum(t.numel() * t.element_size() for t in embeddings._position_cache.values())
    assert cached <= 320 * token_bytes and cached_grids()[-1] == 39
    # A table larger than the whole budget is computed, not kept; evicted grids come back exact.
    assert embeddings.position_embeddings(8, 50, cpu).shape == (400, 32) and 50 not in cached_grids()
    expected = modeling.sincos_position_embedding(8, 10, 32)
    torch.testing.assert_close(embeddings.position_embeddings(8, 10, cpu), expected)


# --- feature extractor: transformers API --------------------------------------------------------------------------


def test_unsigned_pcm_is_centred():
    extractor = MynaFeatureExtractor()
    silence = extractor.to_mono(np.full(1000, 128, dtype=np.uint8))
    np.testing.assert_array_equal(silence, np.zeros(1000, dtype=np.float32))
    extremes = extractor.to_mono(np.array([0, 255], dtype=np.uint8))
    np.testing.assert_allclose(extremes, [-1.0, 127 / 128])
    signed = extractor.to_mono(np.array([-32768, 0, 16384], dtype=np.int16))
    np.testing.assert_allclose(signed, [-1.0, 0.0, 0.5])


@pytest.mark.parametrize(
    "option",
    [
        dict(padding="max_length"),
        dict(truncation=True),
        dict(max_length=96),
        dict(pad_to_multiple_of=16),
        dict(return_attention_mask=True),
    ],
)
def test_padding_options_are_refused_with_what_myna_supports(option):
    extractor = MynaFeatureExtractor()
    with pytest.raises(ValueError, match="chunks of exactly `chunk_frames` frames"):
        extractor(np.zeros(16_000, dtype=np.float32), sampling_rate=16_000, **option)


def test_pad_stacks_chunks_and_refuses_ragged_inputs():
    extractor = MynaFeatureExtractor()
    assert extractor.return_attention_mask is False
    assert MynaFeatureExtractor(return_attention_mask=True).return_attention_mask is False  # old folders stored it
    examples = [{"input_values": np.full((128, 96), i, dtype=np.float32), "labels": i} for i in range(3)]
    batch = extractor.pad(examples, return_tensors="pt")
    assert batch["input_values"].shape == (3, 128, 96) and batch["labels"].tolist() == [0, 1, 2]
    assert "attention_mask" not in batch
    torch.testing.assert_close(batch["input_values"][2], torch.full((128, 96), 2.0))
    # What DataCollatorWithPadding passes.
    from transformers import DataCollatorWithPadding

    collated = DataCollatorWithPadding(extractor)(examples)
    assert collated["input_values"].shape == (3, 128, 96)
    ragged = examples + [{"input_values": np.zeros((128, 98), dtype=np.float32), "labels": 3}]
    with pytest.raises(ValueError, match="single chunks of shape"):
        extractor.pad(ragged)
    with pytest.raises(ValueError, match="no attention mask"):
        extractor.pad(examples, return_attention_mask=True)
