"""ONNX export and the onnxruntime backend: the exported graphs against the PyTorch model (every patch mode, batches of
1 and 7, float32 and int8), their interface and layout, the missing-extra message, the backend in the pipeline and in
the store (the same nearest neighbours as a PyTorch store; the backend in the settings key), a graph of other weights
refused. Tiny models, fixed seeds, no network. One export (`myna export ... --patch_mode all --quantize int8`) serves
the module; it is skipped, with the reason, where onnx, onnxscript or onnxruntime is missing."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch

from myna_pipelines.cli import main
from myna_pipelines.onnx_export import EXTRA_HINT

from .pipelines_support import save_tiny_model


MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed (the `onnx` extra: {EXTRA_HINT})"
)


def load(folder):
    from myna_pipelines.library import load_model

    return load_model(folder, "cpu")


def real_chunks(feature_extractor, seconds: float = 25.0, seed: int = 3) -> torch.Tensor:
    """Chunks of a music-like recording (changing tones in noise), as the feature extractor cuts them."""
    from .pipelines_support import music_like

    audio = music_like(seconds, 22_050, seed=seed)
    return feature_extractor(audio, sampling_rate=22_050, return_tensors="pt")["input_values"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny hybrid model folder with every patch mode's graph, float32 and int8, in its `onnx/` subfolder."""
    if MISSING:
        pytest.skip(f"{', '.join(MISSING)} not installed ({EXTRA_HINT})")
    folder = save_tiny_model(tmp_path_factory.mktemp("model"), "hybrid", head="pretraining")
    argv = ["export", folder, "--format", "onnx", "--output", folder, "--patch_mode", "all", "--quantize", "int8"]
    assert main(argv) == 0
    return folder


def run_graph(path: str, chunks: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    from myna_pipelines.onnx_backend import open_session

    session = open_session(path)
    values = chunks.numpy()
    outputs = [
        session.run(None, {"input_values": values[i : i + batch_size]}) for i in range(0, len(values), batch_size)
    ]
    return tuple(np.concatenate([o[k] for o in outputs]) for k in range(2))


# --- the graphs against the model ---------------------------------------------------------------------------------


@needs_onnx
@pytest.mark.parametrize("patch_mode", ["square", "vertical", "both"])
def test_exported_graphs_match_the_model(exported, patch_mode):
    model, extractor = load(exported)
    chunks = real_chunks(extractor)
    assert len(chunks) >= 7
    with torch.no_grad():
        expected = model.base_model(chunks, patch_mode=patch_mode)
    name = "model.onnx" if patch_mode == "both" else f"model_{patch_mode}.onnx"
    for batch_size in (1, 7):
        hidden, pooled = run_graph(os.path.join(exported, "onnx", name), chunks, batch_size)
        assert cosines(pooled, expected.pooler_output.numpy()).min() >= 0.99999
        np.testing.assert_allclose(hidden, expected.last_hidden_state.numpy(), rtol=1e-4, atol=1e-4)
        quantized = name.replace(".onnx", "_quantized.onnx")
        _, pooled_int8 = run_graph(os.path.join(exported, "onnx", quantized), chunks, batch_size)
        assert cosines(pooled_int8, expected.pooler_output.numpy()).mean() >= 0.999


@needs_onnx
def test_a_vertical_model_exports_its_98_frame_chunks(tmp_path):
    from myna_pipelines.onnx_export import export_onnx

    model, extractor = load(save_tiny_model(tmp_path / "vertical", "vertical"))
    assert extractor.chunk_frames == 98
    result = export_onnx(model, str(tmp_path / "out"), extractor)
    chunks = real_chunks(extractor)
    with torch.no_grad():
        expected = model.base_model(chunks).pooler_output.numpy()
    for batch_size in (1, 7):
        _, pooled = run_graph(result["graphs"]["vertical"]["float32"], chunks, batch_size)
        assert cosines(pooled, expected).min() >= 0.99999


@needs_onnx
def test_a_log_input_model_takes_the_log_inside_its_graph(tmp_path):
    """A model with `input_scale="log"`: the graph takes the same raw power mel as every Myna graph and gives the
    model's output, so the log is in it."""
    from myna_pipelines.onnx_export import export_onnx

    model, extractor = load(save_tiny_model(tmp_path / "log", "base", input_scale="log"))
    result = export_onnx(model, str(tmp_path / "out"), extractor)
    chunks = real_chunks(extractor)
    with torch.no_grad():
        expected = model.base_model(chunks).pooler_output.numpy()
    _, pooled = run_graph(result["graphs"]["square"]["float32"], chunks, 4)
    assert cosines(pooled, expected).min() >= 0.99999


@needs_onnx
def test_the_graph_takes_input_values_and_names_its_outputs_as_the_model(exported):
    import onnx

    from myna_pipelines.onnx_export import graph_metadata

    proto = onnx.load(os.path.join(exported, "onnx", "model.onnx"))
    (graph_input,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "input_values" and dims == ["batch", 128, 96]
    assert [o.name for o in proto.graph.output] == ["last_hidden_state", "pooler_output"]
    metadata = graph_metadata(proto)
    assert metadata["patch_mode"] == "both" and json.loads(metadata["patch_modes"]) == ["square", "vertical"]
    assert json.loads(metadata["embedding_size"]) == 64 and metadata["quantization"] == "none"
    front_end = json.loads(metadata["front_end"])
    assert (front_end["sampling_rate"], front_end["n_fft"], front_end["hop_length"]) == (16_000, 2048, 512)
    assert front_end["log"] is False and front_end["mel_norm"] == "slaney"
    quantized = onnx.load(os.path.join(exported, "onnx", "model_quantized.onnx"))
    # qkv, o_proj, fc1 and fc2 of 2 layers; the tokenizers stay float32
    assert graph_metadata(quantized)["quantization"] == "int8 dynamic (the encoder blocks' linear layers, 8 MatMul)"
    weights = [
        onnx.numpy_helper.to_array(i) for i in quantized.graph.initializer if i.data_type == onnx.TensorProto.INT8
    ]
    assert len([w for w in weights if w.ndim == 2]) == 8
    # 7-bit weights: no 16-bit saturation in ONNX Runtime's kernels on CPUs without VNNI
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


def test_the_front_end_description_is_librosas_mel_spectrogram():
    librosa = pytest.importorskip("librosa", reason="librosa (the `eval` extra) not installed")
    from modeling_myna import MynaFeatureExtractor
    from myna_pipelines.onnx_export import front_end_description

    extractor = MynaFeatureExtractor()
    d = front_end_description(extractor)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * 16_000).astype(np.float32)
    ours = extractor(audio, sampling_rate=16_000, chunk=False, return_tensors="np")["input_values"][0]
    reference = librosa.feature.melspectrogram(
        y=audio, sr=d["sampling_rate"], n_fft=d["n_fft"], hop_length=d["hop_length"], win_length=d["win_length"],
        window="hann", center=d["center"], pad_mode=d["pad_mode"], power=d["power"], n_mels=d["num_mel_bins"],
        htk=d["mel_scale"] != "slaney", norm=d["mel_norm"], fmin=d["fmin"], fmax=d["fmax"],
    )  # fmt: skip
    assert np.abs(ours - reference).max() <= 1e-5 * reference.max()


# --- layout and messages ------------------------------------------------------------------------------------------


@needs_onnx
def test_layouts_of_a_model_folder_and_of_a_new_folder(exported, tmp_path, capsys):
    assert sorted(os.listdir(os.path.join(exported, "onnx"))) == [
        "model.onnx", "model_quantized.onnx", "model_square.onnx", "model_square_quantized.onnx",
        "model_vertical.onnx", "model_vertical_quantized.onnx",
    ]  # fmt: skip
    assert os.path.exists(os.path.join(exported, "preprocessor_config.json"))
    # Into a model folder again: graphs that exist are not replaced without --overwrite.
    assert main(["export", exported, "--output", exported, "--patch_mode", "square", "--no_check"]) == 1
    assert "model_square.onnx exists: pass --overwrite" in capsys.readouterr().err

    out = tmp_path / "out"
    shutil.copytree(os.path.join(exported, "onnx"), out)  # a standalone copy, as optimum writes it
    from myna_pipelines.onnx_export import write_configs

    model, extractor = load(exported)
    write_configs(str(out), model, extractor)
    assert {"config.json", "preprocessor_config.json", "model.onnx"} <= set(os.listdir(out))
    with open(out / "config.json") as f:
        assert json.load(f)["model_type"] == "myna"


def test_a_missing_extra_is_named_in_one_line(monkeypatch, tmp_path, capsys):
    from myna_pipelines import onnx_export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(
        ImportError, match=r'needs onnx, onnxruntime \(missing: onnxruntime\): pip install "myna-hf\[onnx\]"'
    ):
        onnx_export.require("onnx", "onnxruntime")
    folder = save_tiny_model(tmp_path / "model", "base")
    capsys.readouterr()
    assert main(["export", folder, "--format", "onnx", "--output", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[0].startswith("myna export: error: ONNX export needs onnx, onnxscript, onnxruntime (missing: ")
    assert error[0].endswith('pip install "myna-hf[onnx]"')


def test_myna_export_refuses_music_and_other_folders_before_any_work(tmp_path, capsys):
    folder = save_tiny_model(tmp_path / "model", "base")
    music = tmp_path / "music"
    music.mkdir()
    (music / "track.flac").write_bytes(b"fLaC")
    assert main(["export", folder, "--output", str(music), "--overwrite"]) == 2
    assert "holds audio (track.flac)" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["export", folder, "--output", str(other)]) == 2
    assert "is not empty (notes.txt) and holds no ONNX export" in capsys.readouterr().err


# --- the backend --------------------------------------------------------------------------------------------------


@needs_onnx
def test_the_pipeline_runs_the_exported_graphs(exported):
    from transformers import pipeline

    from .pipelines_support import music_like

    audio = {"raw": music_like(12.0, 22_050, seed=5), "sampling_rate": 22_050}
    reference = pipeline("music-embedding", model=exported, device="cpu")
    embed = pipeline("music-embedding", model=exported, device="cpu", backend="onnxruntime")
    assert embed.inference.paths["both"].endswith(os.path.join("onnx", "model.onnx"))
    assert embed.checks[0]["cosine"] >= 0.9999
    for patch_mode in ("both", "square", "vertical"):
        ours = embed(audio, pooling="none", patch_mode=patch_mode)["embeddings"]
        expected = reference(audio, pooling="none", patch_mode=patch_mode)["embeddings"]
        assert ours.shape == expected.shape and cosines(ours, expected).min() >= 0.99999
    int8 = pipeline("music-embedding", model=exported, device="cpu", backend="onnxruntime", precision="int8")
    assert int8.inference.paths["both"].endswith("model_quantized.onnx")
    assert (
        cosines(int8(audio, pooling="none")["embeddings"], reference(audio, pooling="none")["embeddings"]).mean()
        >= 0.999
    )


@needs_onnx
def test_a_graph_of_other_weights_is_refused(exported):
    from myna_pipelines.onnx_backend import MynaOnnxInferenceModel

    model, extractor = load(exported)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    inference = MynaOnnxInferenceModel(model, source=exported, feature_extractor=extractor)
    with pytest.raises(ValueError, match="exported from other weights.*myna export .* --overwrite"):
        inference.embed(real_chunks(extractor)[:2])


@needs_onnx
def test_the_backend_refuses_what_it_cannot_run(exported):
    from myna_pipelines.onnx_backend import MynaOnnxInferenceModel

    model, extractor = load(exported)
    with pytest.raises(ValueError, match="bfloat16 is a PyTorch path"):
        MynaOnnxInferenceModel(model, "bfloat16")
    inference = MynaOnnxInferenceModel(model, source=exported, check=False)
    with pytest.raises(ValueError, match=r"takes \(batch, 128, 96\)"):
        inference.embed(torch.zeros(1, 128, 98))


@needs_onnx
def test_a_store_built_with_onnxruntime_finds_the_same_neighbours(tmp_path, capsys):
    from myna_common.synthetic import write_synthetic_folder
    from myna_pipelines.onnx_backend import MynaOnnxInferenceModel
    from myna_pipelines.search import build_index
    from myna_pipelines.store import EmbeddingStore

    # The model saved again without graphs: the backend exports it on the fly.
    folder = save_tiny_model(tmp_path / "model", "hybrid")
    music = tmp_path / "music"
    write_synthetic_folder(str(music), 8, seed=0, duration=4.0, audio_format="wav")
    base = ["embed", str(music), "--model", folder, "--num_workers", "0", "--device", "cpu"]
    assert main(base + ["--output", str(tmp_path / "torch")]) == 0
    assert main(base + ["--output", str(tmp_path / "ort"), "--backend", "onnxruntime"]) == 0
    assert "no model.onnx for" in capsys.readouterr().err

    stores = {name: EmbeddingStore(str(tmp_path / name)) for name in ("torch", "ort")}
    (paths, torch_vectors, torch_settings), (ort_paths, ort_vectors, ort_settings) = (
        stores["torch"].embeddings(), stores["ort"].embeddings()
    )  # fmt: skip
    assert list(paths) == list(ort_paths) and len(paths) == 8
    assert cosines(ort_vectors, torch_vectors).min() >= 0.99999
    # The backend is part of the settings key; a PyTorch store's settings (hence its key) are as before.
    assert ort_settings["backend"] == "onnxruntime" and "backend" not in torch_settings
    assert stores["ort"].metadata()["settings_key"] != stores["torch"].metadata()["settings_key"]
    assert main(base + ["--output", str(tmp_path / "ort")]) == 1  # PyTorch into an onnxruntime store: refused
    assert "--overwrite to embed the library again" in capsys.readouterr().err

    indexes = {name: build_index(str(tmp_path / name), str(tmp_path / f"{name}-index")) for name in stores}
    for path in paths:  # search by audio: queries go through the store's backend
        hits = {name: [r["path"] for r in index.search_audio(path, k=4)] for name, index in indexes.items()}
        assert hits["ort"] == hits["torch"] and hits["ort"][0] == path
    assert isinstance(indexes["ort"].model()[0], MynaOnnxInferenceModel)
