"""Hub-ready folders: model card, `auto_map` and remote code, feature extractor; `push_to_hub` through the
standard transformers API up to the network call (the upload is intercepted), and a clear offline failure."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled

from modeling_myna import MynaFeatureExtractor, MynaForContrastivePretraining, MynaModel
from modeling_myna.model_card import paper_evaluation_table
from transformers import AutoFeatureExtractor, AutoModel

from .pipelines_support import music_like, save_tiny_model, tiny_config


def read_card(folder) -> str:
    return open(os.path.join(folder, "README.md"), encoding="utf-8").read()


def test_a_saved_folder_carries_card_auto_map_code_and_feature_extractor(tmp_path):
    folder = save_tiny_model(tmp_path / "model", variant="hybrid")
    files = set(os.listdir(folder))
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= files
    code = {"modeling_myna.py", "configuration_myna.py", "feature_extraction_myna.py", "mel.py", "model_card.py"}
    assert code <= files
    auto_map = json.load(open(os.path.join(folder, "config.json")))["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForAudioClassification", "AutoModelForPreTraining"}
    extractor_map = json.load(open(os.path.join(folder, "preprocessor_config.json")))["auto_map"]
    assert extractor_map["AutoFeatureExtractor"] == "feature_extraction_myna.MynaFeatureExtractor"

    card = read_card(folder)
    assert card.startswith("---\nlibrary_name: transformers\nlicense: mit\npipeline_tag: feature-extraction\n")
    for section in ["# Myna (hybrid)", "## Training data", "## Intended use", "## How to use", "## Citation"]:
        assert f"\n{section}\n" in card
    variant = "Variant: **hybrid**; tokenizers: square 16x16, vertical 128x2; default mode `both` (embedding width 64)"
    assert variant in card
    assert "AudioSet, music subset" in card and 'pipeline("music-embedding"' in card and "arXiv:2502.12511" in card
    assert "## Evaluation" not in card  # no results known for random weights


def test_card_content_from_model_card_kwargs(tmp_path):
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(tiny_config("vertical"))
    model.save_pretrained(
        tmp_path,
        model_card_kwargs={
            "training_data": "400 generated clips.",
            "training_config": {"learning_rate": 3e-4, "batch_size": 256},
            "evaluation_table": paper_evaluation_table("vertical"),
            "source": "converted from the released Myna-Vertical checkpoint",
            "tags": ["key-detection"],
        },
    )
    card = read_card(tmp_path)
    assert "- key-detection\n---" in card and "400 generated clips." in card and "learning_rate: 0.0003" in card
    assert "\n## Evaluation\n" in card and "| 90.1 | 37.4 | 75.9 | 68.6 | 66.5 | 45.9 | 66.1 |" in card
    assert "Source: converted from the released Myna-Vertical checkpoint." in card
    with pytest.raises(ValueError, match="no results for variant 'custom'"):
        paper_evaluation_table("custom")


def test_a_classifier_card_names_its_task_and_labels(tmp_path):
    folder = save_tiny_model(
        tmp_path, variant="base", head="classification", num_labels=2, id2label={0: "major", 1: "minor"}
    )
    card = read_card(folder)
    assert "pipeline_tag: audio-classification" in card and "# Myna (base, audio classifier)" in card
    assert "single label classification, 2 labels (major, minor)" in card
    assert "pipeline_class=MynaAudioClassificationPipeline" in card


def test_remote_code_folder_embeds_without_our_packages(tmp_path):
    folder = save_tiny_model(tmp_path / "model", variant="base")
    audio = music_like(7.0, 22_050)
    extractor = MynaFeatureExtractor.from_pretrained(folder)
    with torch.no_grad():
        expected = MynaModel.from_pretrained(folder)(**extractor(audio, sampling_rate=22_050, return_tensors="pt"))
    np.save(tmp_path / "audio.npy", audio)
    np.save(tmp_path / "expected.npy", expected.pooler_output.numpy())
    script = f"""
import sys, numpy as np, torch
from transformers import AutoFeatureExtractor, AutoModel
folder = {folder!r}
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
loaded = {{name.split(".")[0] for name in sys.modules}}
assert not loaded & {{"modeling_myna", "myna_pipelines"}}, "our packages were imported"
features = extractor(np.load({str(tmp_path / "audio.npy")!r}), sampling_rate=22050, return_tensors="pt")
with torch.no_grad():
    embeddings = model(**features).pooler_output.numpy()
np.testing.assert_allclose(embeddings, np.load({str(tmp_path / "expected.npy")!r}), rtol=1e-5, atol=1e-5)
print(type(model).__module__, type(extractor).__module__)
"""
    # Run from an empty folder so that the repository's own packages are not importable from the working directory.
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    modules = result.stdout.split()  # the classes come from the folder's copy of the code
    assert len(modules) == 2 and all(module.startswith("transformers_modules.") for module in modules)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Intercepts the Hub calls of `push_to_hub`: the repository is new (no card yet) and each commit's files are
    copied to `tmp_path / "hub" / repo_id`, which then reads like a clone of the repository."""
    commits = []

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, commit_message=None, **kwargs):
        commits.append((repo_id, commit_message, sorted(op.path_in_repo for op in operations)))
        for operation in operations:
            destination = tmp_path / "hub" / repo_id / operation.path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(operation.path_or_fileobj, destination)
        return f"https://huggingface.co/{repo_id}/commit/0"

    def load_card(cls, repo_id, **kwargs):
        raise EntryNotFoundError(f"{repo_id} has no README.md yet")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(ModelCard, "load", classmethod(load_card))
    return tmp_path / "hub", commits


def test_push_to_hub_uploads_a_folder_that_loads_back(hub):
    clones, commits = hub
    torch.manual_seed(0)
    model = MynaModel(tiny_config("hybrid")).eval()
    extractor = MynaFeatureExtractor.from_config(model.config)
    model.push_to_hub("someone/myna-tiny")
    extractor.push_to_hub("someone/myna-tiny")

    assert [(repo, message) for repo, message, _ in commits] == [
        ("someone/myna-tiny", "Upload model"),
        ("someone/myna-tiny", "Upload feature extractor"),
    ]
    clone = clones / "someone" / "myna-tiny"
    uploaded = set(os.listdir(clone))
    assert {"config.json", "model.safetensors", "modeling_myna.py", "preprocessor_config.json"} <= uploaded
    audio = music_like(4.0, 16_000)
    with torch.no_grad():
        features = AutoFeatureExtractor.from_pretrained(clone)(audio, sampling_rate=16_000, return_tensors="pt")
        torch.testing.assert_close(
            AutoModel.from_pretrained(clone)(**features).pooler_output,
            model(**extractor(audio, sampling_rate=16_000, return_tensors="pt")).pooler_output,
        )


def test_push_to_hub_keeps_the_myna_model_card(hub):
    clones, _ = hub
    MynaModel(tiny_config("base")).push_to_hub("someone/myna-card")
    assert "# Myna (base)" in read_card(clones / "someone" / "myna-card")


def test_push_to_hub_offline_fails_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineModeIsEnabled, match="offline mode is enabled.*unset the `HF_HUB_OFFLINE`"):
        MynaModel(tiny_config("base")).push_to_hub("someone/myna-offline")
