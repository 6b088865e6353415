"""The reduced-precision CPU paths: each meets its accuracy bound on generated music, float32 is the model itself,
and a path that misses its bound is refused."""

import numpy as np
import pytest
import torch

from myna_pipelines.precision import (
    COSINE_BOUND,
    PROBE_BOUND,
    MynaInferenceModel,
    bfloat16_supported,
    check_precision,
    measure_precision,
    probe_score,
)
from modeling_myna import MynaFeatureExtractor, MynaModel

from .pipelines_support import tiny_config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = tiny_config("hybrid")
    model = MynaModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model, MynaFeatureExtractor.from_config(config)


def test_float32_path_is_the_model(tiny):
    model, _ = tiny
    chunks = torch.rand(5, 128, 96) * 1e4
    expected = model(chunks, patch_mode="both").pooler_output
    torch.testing.assert_close(MynaInferenceModel(model, "float32").embed(chunks, "both"), expected, rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_reduced_precision_meets_its_bounds(tiny, precision):
    if precision == "bfloat16" and not bfloat16_supported():
        pytest.skip("this CPU has no native bfloat16")
    model, extractor = tiny
    result = measure_precision(model, extractor, precision, num_clips=10, patch_mode="both", probe=True)
    assert result["cosine"] >= COSINE_BOUND
    assert abs(result["probe_change"]) <= PROBE_BOUND
    assert check_precision(model, extractor, precision)["cosine"] >= COSINE_BOUND
    # int8 weights really are quantized: the embeddings differ from float32's, a little.
    assert result["cosine"] < 1.0


def test_a_precision_below_its_bound_is_refused(tiny, monkeypatch):
    model, extractor = tiny
    import myna_pipelines.precision as precision

    monkeypatch.setattr(precision, "COSINE_BOUND", 1.01)
    with pytest.raises(ValueError, match="below the bound 1.01.*use --precision float32"):
        precision.check_precision(model, extractor, "int8")


def test_probe_score_separates_separable_classes():
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(4), 50)
    embeddings = np.eye(4)[labels] * 3 + rng.standard_normal((200, 4))
    assert probe_score(embeddings, labels) > 90
    assert probe_score(rng.standard_normal((200, 4)), labels) < 50


def test_int8_engine_is_onednn_where_the_cpu_has_vnni_or_amx(monkeypatch):
    import myna_pipelines.precision as precision

    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.int8_engine() == "onednn"
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    assert precision.int8_engine() == torch.backends.quantized.engine  # the fallback: torch's default engine


@pytest.mark.parametrize("engine", ["onednn", "fbgemm"])
def test_int8_quantizes_every_encoder_linear_and_leaves_the_model_alone(tiny, engine):
    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this torch has no {engine} engine")
    from myna_pipelines.precision import quantize_int8

    model, _ = tiny
    global_engine = torch.backends.quantized.engine
    quantized = quantize_int8(model, engine)
    assert torch.backends.quantized.engine == global_engine
    int8_linear = torch.ao.nn.quantized.dynamic.Linear
    encoder_linears = [type(m) for m in quantized.encoder.modules() if isinstance(m, torch.nn.Linear | int8_linear)]
    # qkv, o_proj, fc1 and fc2 of every block, none left in float32
    assert encoder_linears == [int8_linear] * 4 * model.config.num_hidden_layers
    # The tokenizers stay float32, and the model passed in is not touched.
    assert not any(isinstance(m, int8_linear) for m in quantized.embeddings.modules())
    assert not any(isinstance(m, int8_linear) for m in model.modules())
    chunks = torch.rand(4, 128, 96) * 1e4
    with torch.inference_mode():
        expected = model(chunks, patch_mode="both").pooler_output
        got = quantized(chunks, patch_mode="both").pooler_output
    assert torch.nn.functional.cosine_similarity(got, expected).mean() >= COSINE_BOUND


def test_cpu_inference_keeps_freed_memory_only_when_asked(tiny, monkeypatch):
    # Process-wide malloc settings are the caller's choice: a server or a service importing the library keeps
    # glibc's defaults; `myna embed` asks (test_pipelines_library.py).
    import platform

    from myna_pipelines import precision

    model, _ = tiny
    calls = []
    monkeypatch.setattr(precision, "keep_freed_memory", lambda: calls.append(1) or True)
    MynaInferenceModel(model, "float32")
    MynaInferenceModel(model, "int8")
    assert calls == []
    MynaInferenceModel(model, "float32", keep_memory=True)
    assert calls == [1]
    monkeypatch.undo()
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert precision.keep_freed_memory() is glibc
    assert precision.keep_freed_memory() is glibc  # once per process; a second call changes nothing
