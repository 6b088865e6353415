"""Tests of myna_training.pretrain: a tiny run end to end (export, AutoModel, probe, Hub upload up to the network),
the masking draws, and a run killed with SIGKILL that resumes to the same weights as an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from transformers import AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
from modeling_myna import MynaConfig, MynaModel
from myna_training import pretrain
from myna_training.data import SpectrogramBank, random_crop_starts


TINY = [
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--projection_dim", "16", "--num_clips", "16", "--clip_seconds", "4", "--per_device_batch_size", "8",
    "--warmup_steps", "2", "--logging_steps", "2",
]
PRETRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "pretrain.py")


def test_tiny_run_exports_an_automodel_folder_probes_and_uploads(tmp_path, monkeypatch, capsys):
    calls = []
    from huggingface_hub import HfApi

    class Repo:
        repo_id = "someone/myna-tiny"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)) or Repo())
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    out = tmp_path / "run"
    summary = pretrain.main(
        TINY + ["--output_dir", str(out), "--max_steps", "4", "--checkpointing_steps", "0", "--probe_clips", "30",
                "--gradient_accumulation_steps", "2", "--report_to", "tensorboard",
                "--push_to_hub", "--hub_model_id", "someone/myna-tiny"]
    )
    # 4 optimiser steps of 2 accumulated micro-batches of 8 clips.
    assert summary["steps"] == 4 and summary["examples_seen"] == 64 and summary["num_clips"] == 16
    assert summary["skipped"] == 0 and summary["first_loss"] is not None

    # The folder loads with the Auto classes; the bare encoder is the pre-training model's encoder.
    encoder = AutoModel.from_pretrained(out)
    pretraining = AutoModelForPreTraining.from_pretrained(out)
    assert isinstance(encoder, MynaModel) and encoder.config.hidden_size == 32
    features = AutoFeatureExtractor.from_pretrained(out)(
        torch.randn(16_000 * 4).numpy() * 0.1, sampling_rate=16_000, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(features["input_values"]).pooler_output,
            pretraining.myna(features["input_values"]).pooler_output,
        )
    card = (out / "README.md").read_text()
    assert "per_device_batch_size: 8" in card and "generated corpus" in card
    assert os.path.isdir(out / "checkpoints" / "checkpoint-4")  # the final state is always saved
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # --report_to tensorboard

    # Upload: the exported folder, checkpoints and cache left out.
    assert calls[0] == ("create", "someone/myna-tiny", {"private": False, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(out) and "checkpoints/*" in calls[1][1]["ignore_patterns"]
    assert summary["hub_url"] == "https://huggingface.co/someone/myna-tiny"

    # The closing probe compares the pre-trained and a random model, both printed.
    assert set(summary["probe"]["style"]) == {"random init", "pre-trained"}
    assert all(0.0 <= v <= 1.0 for v in summary["probe"]["style"].values())
    printed = capsys.readouterr().out
    assert "random init" in printed and "pre-trained" in printed and "style" in printed


def test_push_offline_fails_with_a_clear_message(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1: the upload is the only step that needs the network.
    with pytest.raises(RuntimeError, match=r"could not push .* is saved in .*hf upload"):
        pretrain.push_folder_to_hub(str(tmp_path), "someone/myna-tiny")


def test_masking_keeps_five_of_48_tokens_chosen_by_the_noise():
    config = MynaConfig.from_variant(
        "hybrid", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, intermediate_size=64
    )
    assert [pretrain.num_tokens(config, p) for p in config.patch_sizes] == [48, 48]  # 8x6 squares, 48 strips
    model = MynaModel(config)
    noise = torch.rand(3, 48, generator=torch.Generator().manual_seed(0))
    for tokenizer in (0, 1):
        tokens, kept = model.embeddings(torch.rand(3, 128, 96) * 10, tokenizer, mask_ratio=0.9, noise=noise)
        assert tokens.shape == (3, 48 - int(0.9 * 48), 32) == (3, 5, 32)
        assert torch.equal(kept, noise.argsort(dim=1)[:, :5])


def test_each_process_uses_its_slice_of_the_global_draws():
    # The loop draws crops for the whole global batch and slices: rank r of N gets what one process would give
    # rows r*B:(r+1)*B.
    bank = SpectrogramBank(torch.rand(1000, 128), torch.tensor([313, 200, 187, 300]))
    index = torch.tensor([3, 1, 0, 2])
    first, second = random_crop_starts(bank.num_frames[index], 96, torch.Generator().manual_seed(3))
    whole = bank.crops(bank.offsets[index] + first, 96)
    rank1 = slice(2, 4)
    torch.testing.assert_close(bank.crops(bank.offsets[index[rank1]] + first[rank1], 96), whole[rank1])
    assert pretrain.epoch_order(10, seed=0, epoch=1).tolist() == pretrain.epoch_order(10, seed=0, epoch=1).tolist()
    assert pretrain.epoch_order(10, 0, 1).tolist() != pretrain.epoch_order(10, 0, 2).tolist()


def launch(args, num_processes=1, **popen_kwargs):
    if num_processes == 1:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", PRETRAIN, *args,
        ]
    else:
        # gloo processes under torchrun (what `accelerate launch --multi_gpu` runs); `accelerate launch --cpu
        # --num_processes N` starts a single process unless MPI is set up.
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(num_processes),
            PRETRAIN, *args,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    # Own session: a kill reaches accelerate's child process too.
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen_kwargs)


def test_two_processes_train_like_one_process_with_the_whole_batch(tmp_path):
    # Same clips, crops, masks, loss state and learning-rate schedule: 2 x 4 clips per step == 1 x 8.
    common = TINY[:-6] + [
        "--max_steps", "3", "--warmup_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "0",
        "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    two = launch(common + ["--per_device_batch_size", "4", "--output_dir", str(tmp_path / "two")], num_processes=2)
    output, _ = two.communicate(timeout=300)
    assert two.returncode == 0, output[-3000:]
    assert "(2 process(es) x 4" in output
    pretrain.main(common + ["--per_device_batch_size", "8", "--output_dir", str(tmp_path / "one")])
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-5, msg=name)


def test_run_killed_mid_way_resumes_to_the_same_weights(tmp_path):
    common = TINY + [
        "--max_steps", "80", "--checkpointing_steps", "10", "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    straight = launch(common + ["--output_dir", str(tmp_path / "straight")])
    output, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output[-3000:]

    # The interrupted run reads its crops out-of-core (memory-mapped store, background thread), the uninterrupted one
    # from a resident bank: same plan, same crops, so the same weights.
    killed_dir = tmp_path / "killed"
    common_out_of_core = common + ["--spectrogram_placement", "out_of_core"]
    killed = launch(common_out_of_core + ["--output_dir", str(killed_dir)])
    deadline = time.time() + 300
    while not (killed_dir / "checkpoints" / "checkpoint-10").is_dir():
        assert killed.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert not (killed_dir / "model.safetensors").exists(), "killed too late: the run had finished"
    assert pretrain.list_checkpoints(str(killed_dir))  # the last complete checkpoint survived

    resumed = launch(common_out_of_core + ["--output_dir", str(killed_dir), "--resume_from_checkpoint", "latest"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert "-> out-of-core: read from" in output and "spectrograms: reusing" in output
    assert "resumed from" in output and "at step 80" not in output
    expected, actual = load_file(tmp_path / "straight" / "model.safetensors"), load_file(killed_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_default_run_beats_a_random_model_on_the_probe(tmp_path):
    # The project's main job with its defaults (a few CPU minutes): the pre-trained embeddings must probe better.
    summary = pretrain.main(["--output_dir", str(tmp_path / "default")])
    for task, scores in summary["probe"].items():
        assert scores["pre-trained"] > scores["random init"], (task, scores)


@pytest.mark.parametrize("loss", ["infonce", "sogclr"])
def test_streamed_folder_trains_and_reports_bad_files(tmp_path, loss):
    import numpy as np
    import soundfile as sf

    for i in range(6):
        t = np.arange(4 * 16_000) / 16_000
        sf.write(tmp_path / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16_000)
    (tmp_path / "broken.flac").write_bytes(b"fLaC but nothing after")
    summary = pretrain.main(
        TINY[:-6] + ["--dataset", "folder", "--data_dir", str(tmp_path), "--streaming", "--loss", loss,
                     "--shuffle_buffer_size", "4", "--per_device_batch_size", "4", "--max_steps", "3",
                     "--warmup_steps", "0", "--checkpointing_steps", "0", "--probe_clips", "0",
                     "--output_dir", str(tmp_path / "run")]
    )
    assert summary["steps"] == 3 and summary["num_clips"] is None
    assert summary["skipped"] == 1 and "undecodable (e.g. broken.flac)" in summary["skipped_detail"]
    assert AutoModel.from_pretrained(tmp_path / "run").config.hidden_size == 32


def test_streamed_sogclr_matches_the_cached_run(tmp_path):
    # A stream that delivers the clips in the cached run's order, with their stable indices, gives the same crops,
    # the same SogCLR state (keyed by index) and the same weights as the cached, resident run.
    import datasets

    from myna_training.data import BatchPlan, SkipReport, SpectrogramStore, StreamingSpectrograms, crop_generator
    from myna_training.losses import SogCLRLoss
    from tests.test_training_data import random_spectrogram_dataset

    num_frames = [313, 120, 200, 96, 150, 313, 99, 180]
    cached = random_spectrogram_dataset(num_frames)
    store = SpectrogramStore.write(cached, str(tmp_path / "store"), SkipReport())
    bank = store.bank("cpu", resident=True)
    plan = BatchPlan(store.num_frames, global_batch=4, crop_frames=96, seed=0)
    order = torch.cat([plan(0)[0], plan(1)[0]])  # epoch 0's order
    stream = cached.select(order.tolist()).add_column("skip_reason", [""] * 8).to_iterable_dataset()
    streamed = StreamingSpectrograms(stream, batch_size=4, device="cpu", storage_dtype="bfloat16", shuffle_buffer_size=0)

    config = MynaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64,
                        projection_dim=16)
    runs = {}
    for name in ("cached", "streamed"):
        torch.manual_seed(0)
        model = modeling_myna.MynaForContrastivePretraining(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = SogCLRLoss(len(store))
        for micro in range(2):
            if name == "cached":
                index, first, second = plan(micro)
                view1 = bank.crops(bank.offsets[index] + first, 96)
                view2 = bank.crops(bank.offsets[index] + second, 96)
            else:
                view1, view2, index = streamed.next_batch(96, crop_generator(0, micro))
            noise = [torch.rand((8, 48), generator=torch.Generator().manual_seed(micro))]
            loss = model(views=[view1.float(), view2.float()], noise=noise, loss_fn=loss_fn, index=index).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        runs[name] = (loss_fn.u.clone(), {k: v.detach().clone() for k, v in model.state_dict().items()})
    assert runs["cached"][0].count_nonzero() == 8  # every clip visited once
    torch.testing.assert_close(runs["streamed"][0], runs["cached"][0], rtol=0, atol=0)
    for key, value in runs["cached"][1].items():
        torch.testing.assert_close(runs["streamed"][1][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.gpu
@pytest.mark.parametrize("placement", ["resident", "out_of_core"])
def test_cpu_smoke_preset_trains_in_bf16_on_a_gpu(tmp_path, placement):
    config = os.path.join(os.path.dirname(PRETRAIN), "configs", "cpu-smoke.yaml")
    summary = pretrain.main(["--config", config, "--mixed_precision", "bf16", "--spectrogram_placement", placement,
                             "--output_dir", str(tmp_path / "run"), "--max_steps", "6"])
    assert summary["steps"] == 6 and torch.isfinite(torch.tensor(summary["last_loss"]))
    assert AutoModel.from_pretrained(tmp_path / "run").config.hidden_size == 64


def test_checkpoint_listing_ignores_foreign_and_partial_folders(tmp_path):
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-30.tmp", "checkpoint-foo", "checkpoint-", "notes"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert [os.path.basename(p) for p in pretrain.list_checkpoints(str(tmp_path))] == ["checkpoint-2", "checkpoint-10"]


def test_spectrogram_cache_key_follows_the_files_and_ignores_reading_settings(tmp_path):
    import numpy as np
    import soundfile as sf

    from myna_training.arguments import DataArguments
    from myna_training.data import SkipReport, load_clips

    sf.write(tmp_path / "a.wav", np.full(16_000 * 4, 0.1, np.float32), 16_000)

    def key(**changes):
        data_args = DataArguments(dataset="folder", data_dir=str(tmp_path), **changes)
        clips, _ = load_clips(data_args, seed=0, skipped=SkipReport())
        return pretrain.cache_key(
            {k: getattr(data_args, k) for k in pretrain.SPECTROGRAM_FIELDS}, clips._fingerprint
        )

    first = key()
    assert key(preprocessing_batch_size=64, shuffle_buffer_size=7, spectrogram_placement="out_of_core") == first
    assert key(storage_dtype="float32") != first
    sf.write(tmp_path / "a.wav", np.full(16_000 * 5, 0.1, np.float32), 16_000)  # same name, new content
    assert key() != first
