"""Tests of myna_training.pretrain: a tiny run end to end (export, AutoModel, probe, Hub upload up to the network),
the masking draws, and a run killed with SIGKILL that resumes to the same weights as an uninterrupted one."""

import os
import re
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
    encoder = AutoModel.from_pretrained(out / "model")
    pretraining = AutoModelForPreTraining.from_pretrained(out / "model")
    assert isinstance(encoder, MynaModel) and encoder.config.hidden_size == 32
    features = AutoFeatureExtractor.from_pretrained(out / "model")(
        torch.randn(16_000 * 4).numpy() * 0.1, sampling_rate=16_000, return_tensors="pt"
    )
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(features["input_values"]).pooler_output,
            pretraining.myna(features["input_values"]).pooler_output,
        )
    card = (out / "model" / "README.md").read_text()
    assert "per_device_batch_size: 8" in card and "generated corpus" in card
    assert os.path.isdir(out / "checkpoints" / "checkpoint-4")  # the final state is always saved
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # --report_to tensorboard

    # The export holds only what from_pretrained needs and the card; the run's state lives beside it.
    assert sorted(os.listdir(out)) == ["cache", "checkpoints", "logs", "model", "run.json"]
    exported = set(os.listdir(out / "model"))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= exported
    assert not exported & {"checkpoints", "cache", "logs", "run.json"}
    assert all(name.endswith((".json", ".safetensors", ".md", ".py")) for name in exported), exported

    # Upload: the export folder, nothing else.
    assert calls[0] == ("create", "someone/myna-tiny", {"private": False, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(out / "model")
    assert summary["hub_url"] == "https://huggingface.co/someone/myna-tiny"

    # The closing probe compares the pre-trained and a random model, both printed.
    assert set(summary["probe"]["style"]) == {"random init", "pre-trained"}
    assert all(0.0 <= v <= 1.0 for v in summary["probe"]["style"].values())
    captured = capsys.readouterr()
    printed = captured.out
    assert "random init" in printed and "pre-trained" in printed and "style" in printed
    # The demo announces the closing probe before its silent minute, and says where the model is and what next.
    assert printed.index("Closing probe: embedding 30 held-out generated clips") < printed.index("random init")
    assert f"model saved to {out / 'model'}" in printed and "myna embed song.flac --model" in printed
    assert printed.count("model saved to") == 1 and "(checkpoints/, logs/, cache/, run.json)" in printed
    assert "masking: uniform, 90% of the tokens dropped (constant ratio)" in printed
    assert "device: cpu x 1 process; precision float32" in printed
    # Preprocessing reports clips per second and the time left, in plain lines (stderr is not a terminal here).
    assert re.search(r"Spectrograms( \(num_proc=\d+\))?: 16/16 clips \(100%\), .* \[[\d.]+ clips/s\]", captured.err)
    assert "\rSpectrograms" not in captured.err  # (transformers' own bars are quieted by the script, not here)


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
    one = load_file(tmp_path / "one" / "model" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model" / "model.safetensors")
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
    assert not (killed_dir / "model" / "model.safetensors").exists(), "killed too late: the run had finished"
    assert pretrain.list_checkpoints(str(killed_dir))  # the last complete checkpoint survived

    resumed = launch(common_out_of_core + ["--output_dir", str(killed_dir), "--resume_from_checkpoint", "latest"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert "-> out-of-core: read from" in output and "spectrograms: reusing" in output
    assert "resumed from" in output and "at step 80" not in output
    expected = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    actual = load_file(killed_dir / "model" / "model.safetensors")
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
    assert AutoModel.from_pretrained(tmp_path / "run" / "model").config.hidden_size == 32


# ----------------------------------------------------------------------------------------------- run folders (issue 10)

QUICK = TINY + ["--checkpointing_steps", "0", "--probe_clips", "0", "--warmup_steps", "0", "--logging_steps", "1"]


def weights(folder):
    return load_file(os.path.join(folder, "model", "model.safetensors"))


def test_runs_in_one_folder_never_mix(tmp_path, capsys):
    # The sequence of issue 10: 5 steps with seed 0, then 3 with seed 1, then --resume_from_checkpoint latest.
    out = str(tmp_path / "run")
    cache = ["--cache_dir", str(tmp_path / "cache")]
    first = pretrain.main(QUICK + cache + ["--output_dir", out, "--max_steps", "5", "--seed", "0"])
    assert first["steps"] == 5 and first["resumed_at_step"] is None
    seed0 = weights(out)

    # A new run into the non-empty folder refuses, naming the run already there, and changes nothing.
    with pytest.raises(ValueError, match=rf"{out} is not empty .*run {first['run_id']}.*--overwrite_output_dir"):
        pretrain.main(QUICK + cache + ["--output_dir", out, "--max_steps", "3", "--seed", "1"])
    assert all(torch.equal(seed0[k], v) for k, v in weights(out).items())

    # With --overwrite_output_dir it replaces the first run entirely: no checkpoint-5 is left to be picked up.
    second = pretrain.main(QUICK + cache + ["--output_dir", out, "--max_steps", "3", "--seed", "1",
                                            "--overwrite_output_dir"])
    assert second["run_id"] != first["run_id"]
    assert [os.path.basename(c) for c in pretrain.list_checkpoints(out)] == ["checkpoint-3"]
    seed1 = weights(out)

    # Resuming with another seed is another run: it stops, naming both runs and what differs.
    with pytest.raises(ValueError, match=rf"cannot resume: run {second['run_id']} .*this run \(run {first['run_id']}.*seed: 1 -> 0"):
        pretrain.main(QUICK + cache + ["--output_dir", out, "--max_steps", "5", "--seed", "0",
                                       "--resume_from_checkpoint", "latest"])

    # Even a foreign checkpoint with a higher step number in the folder (e.g. copied in by hand) is never resumed.
    import shutil

    shutil.copytree(os.path.join(out, "checkpoints", "checkpoint-3"), os.path.join(out, "checkpoints", "checkpoint-5"))
    foreign = {"run_id": first["run_id"], "seed": 0, "data_hash": "?", "settings": {"seed": 0}}
    pretrain.write_identity(os.path.join(out, "checkpoints", "checkpoint-5"), foreign)
    capsys.readouterr()
    resumed = pretrain.main(QUICK + cache + ["--output_dir", out, "--max_steps", "3", "--seed", "1",
                                             "--resume_from_checkpoint", "latest"])
    printed = capsys.readouterr().out
    assert "checkpoint-3 at step 3" in printed and resumed["run_id"] == second["run_id"]
    assert resumed["steps"] == 3 and resumed["session_steps"] == 0 and resumed["session_examples"] == 0
    assert "this session 0 steps, 0 examples" in printed and "nothing left to train" in printed
    for name, value in weights(out).items():  # the export is still the seed-1 model
        torch.testing.assert_close(value, seed1[name], rtol=0, atol=0)


def test_a_resumed_summary_separates_this_session_from_the_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    args = QUICK + ["--output_dir", out, "--max_steps", "6", "--checkpointing_steps", "4"]
    checkpoint = os.path.join(out, "checkpoints", "checkpoint-4")
    pretrain.main(args)
    # Keep only the step-4 checkpoint, as if the run had been killed after it.
    import shutil

    shutil.rmtree(os.path.join(out, "checkpoints", "checkpoint-6"))
    capsys.readouterr()
    summary = pretrain.main(args + ["--resume_from_checkpoint", "latest"])
    printed = capsys.readouterr().out
    assert f"from {checkpoint} at step 4" in printed
    assert summary["resumed_at_step"] == 4 and summary["session_steps"] == 2 and summary["steps"] == 6
    assert summary["session_examples"] == 16 and summary["examples_seen"] == 48
    assert "resumed at step 4; this session 2 steps, 16 examples in" in printed
    assert "run total 6 steps, 48 examples" in printed
    assert "(first step)" not in printed and "first micro-batch after resuming at step 4" in printed


def test_settings_that_do_not_change_the_weights_do_not_change_the_run():
    a = pretrain.run_identity({"seed": 0, "learning_rate": 1e-3, "output_dir": "a", "logging_steps": 1}, "data")
    b = pretrain.run_identity({"seed": 0, "learning_rate": 1e-3, "output_dir": "b", "logging_steps": 50}, "data")
    assert a["run_id"] == b["run_id"]
    assert pretrain.run_identity({"seed": 1, "learning_rate": 1e-3}, "data")["run_id"] != a["run_id"]
    assert pretrain.run_identity({"seed": 0, "learning_rate": 1e-3}, "other data")["run_id"] != a["run_id"]


def test_overwrite_and_resume_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pick one"):
        pretrain.main(QUICK + ["--output_dir", str(tmp_path), "--overwrite_output_dir",
                               "--resume_from_checkpoint", "latest"])


def test_user_errors_are_one_line_with_a_suggestion(tmp_path):
    env = {**os.environ, "MYNA_DEBUG": ""}
    typo = subprocess.run([sys.executable, PRETRAIN, "--per_device_batchsize", "4"], capture_output=True, text=True,
                          env=env)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "unknown option --per_device_batchsize. Did you mean '--per_device_batch_size'?" in typo.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(
        [sys.executable, PRETRAIN, "--dataset", "folder", "--data_dir", str(empty), "--output_dir",
         str(tmp_path / "out")], capture_output=True, text=True, env=env,
    )
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert f"pretrain.py: error: no audio files" in run.stderr and str(empty) in run.stderr
    debug = subprocess.run([sys.executable, PRETRAIN, "--per_device_batchsize", "4", "--debug"], capture_output=True,
                           text=True, env=env)
    assert "Traceback" in debug.stderr  # --debug keeps the traceback


def test_help_names_the_config_file_and_the_run_folder():
    help_text = subprocess.run([sys.executable, PRETRAIN, "--help"], capture_output=True, text=True).stdout
    assert "--config FILE" in help_text and "myna-base.yaml" in help_text and "--debug" in help_text
    assert "--overwrite_output_dir" in help_text and "(default: None)" not in help_text


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
    assert AutoModel.from_pretrained(tmp_path / "run" / "model").config.hidden_size == 64


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


def test_a_run_that_failed_during_its_set_up_does_not_block_the_next(tmp_path):
    # The first attempt stops before any checkpoint (here: an empty data folder); fixing the mistake and running again
    # in the same folder just works, where a folder with a checkpoint or a model would be refused.
    out = str(tmp_path / "run")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.wav").write_bytes(b"RIFF but not audio")
    with pytest.raises(ValueError, match="no usable clip is left"):
        pretrain.main(QUICK + ["--output_dir", out, "--dataset", "folder", "--data_dir", str(tmp_path / "broken")])
    assert os.listdir(out) and not os.path.exists(os.path.join(out, "model"))  # it got as far as writing run.json
    summary = pretrain.main(QUICK + ["--output_dir", out, "--max_steps", "1", "--cache_dir", str(tmp_path / "cache")])
    assert summary["steps"] == 1


# ------------------------------------------------------------------ a store that proves it is whole (issue 19, item 1)


def test_a_damaged_store_in_the_cache_stops_the_next_run_in_one_line(tmp_path, capsys):
    import json

    from myna_common.cli_support import run_cli

    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "first"), "--max_steps", "1"])
    (store,) = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("spectrograms-")]
    with open(store / "frames.bin", "r+b") as f:  # a bit flipped: same size, finite values
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0x04]))
    capsys.readouterr()
    argv = QUICK + cache + ["--output_dir", str(tmp_path / "second"), "--max_steps", "1",
                            "--spectrogram_placement", "resident"]
    assert run_cli(pretrain.main, "pretrain.py", argv) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    recorded = json.loads((store / "meta.json").read_text())["checksum"]["value"]
    assert len(error) == 1 and error[0].startswith(
        f"pretrain.py: error: the spectrogram store {store} is damaged: the xxh3_128 checksum of frames.bin is "
    )
    assert error[0].endswith(
        f", not the {recorded} recorded when it was written (its content changed). Delete that folder "
        f"(rm -r {store}); the next run recomputes it."
    )


def launch_ranks(args, num_processes=2):
    """`num_processes` gloo processes of pretrain.py started one by one, as srun or mpirun start them (torchrun would
    stop the others when one fails): each one's output apart, `(rank, process)` each."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = []
    for rank in range(num_processes):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(num_processes), "LOCAL_WORLD_SIZE": str(num_processes)}
        ranks.append(subprocess.Popen([sys.executable, PRETRAIN, *args], env=env, start_new_session=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return ranks


def finish_ranks(ranks, timeout: float) -> list[str]:
    """Each rank's output once it has exited; a rank still running after `timeout` seconds (waiting in a
    collective) is killed, and the test fails."""
    deadline, outputs = time.time() + timeout, []
    for process in ranks:
        try:
            outputs.append(process.communicate(timeout=max(1.0, deadline - time.time()))[0])
        except subprocess.TimeoutExpired:
            for other in ranks:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            pytest.fail(f"a rank was still running {timeout:.0f} s after the start: "
                        + "\n---\n".join(p.communicate()[0][-2000:] for p in ranks))
    return outputs


@pytest.mark.parametrize("damage", ["non-finite crop", "checksum", "meta.json"])
def test_a_damaged_store_stops_every_rank_at_once_with_one_message(tmp_path, damage):
    # Out-of-core, on 2 processes. "non-finite crop": the checksum matches, but the clip that rank 1 reads in the
    # first step holds NaN; each crop is checked as it is read, by the rank that reads it, and rank 0 used to go on
    # into the step's collectives and wait there for the rank that had stopped. "checksum": one bit flipped; only
    # rank 0 (the machine's local main process) reads the whole file to check it, and rank 1 learns the outcome.
    # "meta.json": unreadable; the main process finds it in its turn at the store, where rank 1 used to wait.
    import json

    import numpy as np

    from myna_training.batch_plan import BatchPlan
    from myna_training.spectrogram_store import SpectrogramStore, new_checksum

    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "first"), "--max_steps", "1"])
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("spectrograms-")]
    store = SpectrogramStore(str(folder))
    index, first, _ = BatchPlan(store.num_frames, global_batch=8, crop_frames=96, seed=0)(0)
    clip = int(index[5])  # rank 1's rows are 4-7 of the global batch of 2 x 4
    offset = int(store.num_frames[:clip].sum()) * store.row_bytes
    frames = np.fromfile(store.frames_path, dtype=np.uint8)
    meta = json.loads((folder / "meta.json").read_text())
    if damage == "meta.json":
        meta = "{broken"
        expected = f"pretrain.py: error: the spectrogram store {folder} is damaged: its meta.json cannot be read ("
    elif damage == "checksum":
        frames[offset] ^= 0x04  # a low mantissa bit: finite
        expected = (
            f"pretrain.py: error: the spectrogram store {folder} is damaged: the xxh3_128 checksum of frames.bin is "
        )
    else:
        frames[offset : offset + int(store.num_frames[clip]) * store.row_bytes] = 0xFF  # NaN (float32 and bfloat16)
        checksum = new_checksum()
        checksum.update(frames)
        meta["checksum"]["value"] = checksum.hexdigest()
        expected = (
            f"pretrain.py: error: the crop of clip {clip} (frames {int(first[5])}-{int(first[5]) + 96} of the clip) "
            f"holds NaN or inf values: training stopped before they reach the loss. The spectrogram store {folder} "
            "is damaged: delete that folder; the next run recomputes it."
        )
    frames.tofile(store.frames_path)
    (folder / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))

    started = time.time()
    ranks = launch_ranks(TINY[:-6] + cache + [
        "--per_device_batch_size", "4", "--max_steps", "2", "--checkpointing_steps", "0", "--probe_clips", "0",
        "--spectrogram_placement", "out_of_core", "--output_dir", str(tmp_path / "second"),
    ])
    outputs = finish_ranks(ranks, timeout=240)
    errors = [[line for line in output.splitlines() if "error:" in line] for output in outputs]
    assert errors[0] == errors[1] and len(errors[0]) == 1, outputs  # one line, the same on both ranks
    for rank, (process, lines) in enumerate(zip(ranks, errors)):
        assert process.returncode == 1 and lines[0].startswith(expected), f"rank {rank}: {outputs[rank][-3000:]}"
    assert time.time() - started < 240
    assert not (tmp_path / "second" / "model").exists()


def test_a_store_of_an_earlier_format_in_the_cache_is_recomputed(tmp_path, capsys):
    """An upgrade finds the cache's store written by an earlier version: the run says so and recomputes it, where a
    damaged store of this version stops the run (above)."""
    import json

    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "first"), "--max_steps", "1"])
    (store,) = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("spectrograms-")]
    meta = json.loads((store / "meta.json").read_text())
    (store / "meta.json").write_text(json.dumps({**meta, "format": meta["format"] - 1}))
    capsys.readouterr()
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "second"), "--max_steps", "1"])
    out = capsys.readouterr().out
    assert f"spectrograms: {store} was written by an earlier version (store format {meta['format'] - 1}, now " in out
    assert json.loads((store / "meta.json").read_text()) == meta  # recomputed: the same spectrograms, this format


# ------------------------------------------------------------------- runs resume only as planned (issue 19, item 2)


def resumable_copy(source, target, step: int):
    """A copy of a finished run's folder as a kill after checkpoint `step` would have left it."""
    import shutil

    shutil.copytree(source, target)
    shutil.rmtree(target / "model")
    for checkpoint in pretrain.list_checkpoints(str(target)):
        if int(checkpoint.rsplit("-", 1)[1]) > step:
            shutil.rmtree(checkpoint)


def test_a_resume_on_another_process_count_is_refused_or_continues_the_same_plan(tmp_path):
    # A 1-process run with batch 8, killed after step 2. Resumed on 2 processes with batch 8 each (global batch 16):
    # refused, naming both layouts and what to pass. With --per_device_batch_size 4 and
    # --resume_with_new_process_count: the same global batch, so the same plan, and the weights of the run that
    # was never interrupted.
    common = TINY[:-6] + [
        "--max_steps", "4", "--warmup_steps", "2", "--logging_steps", "1", "--checkpointing_steps", "2",
        "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    pretrain.main(common + ["--per_device_batch_size", "8", "--output_dir", str(tmp_path / "one")])
    identity = pretrain.read_identity(str(tmp_path / "one"))
    assert identity["settings"]["num_processes"] == 1 and identity["settings"]["global_batch_size"] == 8
    resumed = tmp_path / "resumed"
    resumable_copy(tmp_path / "one", resumed, step=2)
    resume = ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]

    refused = launch(common + ["--per_device_batch_size", "8", *resume], num_processes=2)
    output, _ = refused.communicate(timeout=300)
    assert refused.returncode != 0
    assert (
        f"cannot resume: run {identity['run_id']} in {resumed}/checkpoints" in output
        and "was planned for 1 process(es) x 8 clips (global batch 8), and this launch has 2 process(es) x 8 clips "
        "(global batch 16)" in output
        and "or keep its global batch on 2 process(es) with --per_device_batch_size 4 "
        "--resume_with_new_process_count" in output
    ), output[-3000:]
    # The same global batch without the flag: refused too, naming the flag (checked in one process: the identities).
    two_by_four = {**identity, "run_id": "x", "settings": {**identity["settings"], "num_processes": 2,
                                                           "per_device_batch_size": 4}}
    with pytest.raises(ValueError, match=r"The global batch is the same, .* pass --resume_with_new_process_count"):
        pretrain.resolve_checkpoint("latest", str(resumed), two_by_four)
    with pytest.raises(ValueError, match="a streamed run keeps one stream position per process"):
        pretrain.resolve_checkpoint("latest", str(resumed), two_by_four, new_process_count=True, streaming=True)

    continued = launch(common + ["--per_device_batch_size", "4", *resume, "--resume_with_new_process_count"],
                       num_processes=2)
    output, _ = continued.communicate(timeout=300)
    assert continued.returncode == 0, output[-3000:]
    assert "resumed from" in output and "(2 process(es) x 4" in output
    assert pretrain.read_identity(str(resumed))["run_id"] == identity["run_id"]  # the run goes on as itself
    one, two = load_file(tmp_path / "one" / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=2e-5, msg=name)


def test_a_streamed_run_on_two_processes_resumes_each_stream_where_it_was(tmp_path):
    # Rank 0's share of the stream holds a silent clip, which it skips: after the same number of steps the two ranks
    # stand at different positions of the stream. Each must resume from its own (accelerate saves the main
    # process's registered state only), so the resumed run ends with the weights of the uninterrupted one.
    import numpy as np
    import soundfile as sf

    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(4 * 16_000) / 16_000
    sf.write(music / "a_silent.wav", np.zeros_like(t, dtype=np.float32), 16_000)  # first: rank 0's
    for i in range(11):
        sf.write(music / f"clip{i:02d}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32), 16_000)
    common = TINY[:-6] + [
        "--dataset", "folder", "--data_dir", str(music), "--streaming", "--loss", "infonce",
        "--shuffle_buffer_size", "0", "--per_device_batch_size", "2", "--max_steps", "4", "--warmup_steps", "0",
        "--logging_steps", "1", "--checkpointing_steps", "2", "--probe_clips", "0",
    ]
    straight = launch(common + ["--output_dir", str(tmp_path / "straight")], num_processes=2)
    output, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, output[-3000:]
    positions = [torch.load(tmp_path / "straight" / "checkpoints" / "checkpoint-2" / f"rank_state_{r}.pt",
                            weights_only=True)["stream"] for r in (0, 1)]
    assert positions[0] != positions[1]  # rank 0 read one clip more (the silent one)

    resumed = tmp_path / "resumed"
    resumable_copy(tmp_path / "straight", resumed, step=2)
    again = launch(common + ["--output_dir", str(resumed), "--resume_from_checkpoint", "latest"], num_processes=2)
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output[-3000:]
    assert "resumed from" in output
    expected = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    actual = load_file(resumed / "model" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)


# ------------------------------------------------------------- complementary masking on content (issue 19, item 4)


def test_pretraining_hands_complementary_masking_each_pairs_crop_offset(tmp_path, monkeypatch):
    # Both placements: the offset of each pair's second crop from its first, for the whole global batch, as the
    # batch plan drew it, so that the two views keep disjoint audio, not only disjoint grid positions.
    from modeling_myna.masking import MynaComplementaryMasking
    from myna_training.data import BatchPlan, SpectrogramStore

    seen = []
    draw = MynaComplementaryMasking.draw

    def spy(self, *args, **inputs):
        seen.append(inputs["view_shift_frames"].clone())
        return draw(self, *args, **inputs)

    monkeypatch.setattr(MynaComplementaryMasking, "draw", spy)
    cache = ["--cache_dir", str(tmp_path / "cache"), "--masking_policy", "complementary", "--max_steps", "2"]
    for placement in ("resident", "out_of_core"):
        seen.clear()
        pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / placement), "--spectrogram_placement", placement])
        (store,) = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("spectrograms-")]
        plan = BatchPlan(SpectrogramStore(str(store)).num_frames, global_batch=8, crop_frames=96, seed=0)
        assert len(seen) == 2  # one draw per step (one tokenizer)
        for micro, shift in enumerate(seen):
            _, first, second = plan(micro)
            assert torch.equal(shift, second - first), placement
        assert any(bool((s != 0).any()) for s in seen)
    # A stream: each process's own pairs (here all 8), drawn as the stream crops them.
    seen.clear()
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "streamed"), "--streaming", "--loss", "infonce"])
    assert len(seen) == 2 and all(s.shape == (8,) and s.abs().max() <= 4 * 16_000 // 512 + 1 - 96 for s in seen)
    assert any(bool((s != 0).any()) for s in seen)
    with pytest.raises(ValueError, match="complementary keeps disjoint tokens in the two views, which needs at least 50%"):
        pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "low"), "--mask_ratio", "0.4"])


@pytest.mark.parametrize("flags", [[], ["--cpu"], ["--mixed_precision", "bf16"]], ids=["plain", "cpu", "bf16"])
def test_the_accelerate_config_leaves_launch_nothing_to_guess(flags, monkeypatch, caplog):
    """`accelerate launch --config_file training/accelerate.yaml` (the docs' and `make demo`'s) prints no
    "values were not passed" notice, on a 16-core host too, and its own flags still win."""
    import psutil
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 16)
    config = os.path.join(os.path.dirname(PRETRAIN), "accelerate.yaml")
    args = launch_command_parser().parse_args(["-q", "--config_file", config, *flags, PRETRAIN])
    with caplog.at_level("WARNING"):
        args, _, _ = _validate_launch_command(args)
    assert "were not passed" not in caplog.text and args.num_processes == 1
    assert args.mixed_precision == ("bf16" if "bf16" in flags else "no")

    # Without the file, the same launch warns (what the file is for).
    args = launch_command_parser().parse_args(["-q", *flags, PRETRAIN])
    # and no user default config either
    monkeypatch.setattr("accelerate.commands.launch.default_config_file", os.path.join(config, "absent.yaml"))
    with caplog.at_level("WARNING"):
        _validate_launch_command(args)
    assert "were not passed" in caplog.text
