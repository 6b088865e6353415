"""Tests of myna_training.ablate (the sweep design; a 2-point sweep of a tiny model that writes its table and plot; the
policy pictures) and of pre-training with a masking policy and a ratio schedule."""

import json
import os

import pytest
import torch

from myna_training import ablate


TINY = (
    "--hidden_size 32 --num_hidden_layers 1 --num_attention_heads 2 --intermediate_size 64 --projection_dim 16 "
    "--clip_seconds 4 --logging_steps 1"
)


def test_one_factor_at_a_time_varies_each_factor_around_the_papers_values():
    args = ablate.AblationArguments(
        mask_ratios="0.5,0.9", masking_policies="uniform,time_block,frequency_band", batch_sizes="16,64",
        model_sizes="small", variants="base,vertical",
    )
    points = ablate.sweep_points(args)
    base = {
        "mask_ratio": 0.9, "mask_schedule": "constant", "masking_policy": "uniform", "batch_size": 64,
        "model_size": "small", "variant": "base", "crop_frames": None, "recipe": "", "examples": 6400,
    }
    assert points[0] == base
    assert {ablate.run_name(p) for p in points[1:]} == {
        "base-small-r0.5-uniform-b64-e6400", "base-small-r0.9-time_block-b64-e6400",
        "base-small-r0.9-frequency_band-b64-e6400", "base-small-r0.9-uniform-b16-e6400",
        "vertical-small-r0.9-uniform-b64-e6400",
    }
    grid = ablate.sweep_points(ablate.AblationArguments(
        mask_ratios="0.5,0.9", masking_policies="uniform", batch_sizes="8", model_sizes="small,vit-t",
        variants="base", design="grid",
    ))
    assert len(grid) == 4
    with pytest.raises(ValueError, match="unknown masking_policy"):
        ablate.sweep_points(ablate.AblationArguments(masking_policies="uniform,random"))
    # Equal examples per run: a smaller batch takes more steps.
    argv = ablate.pretrain_argv({**base, "batch_size": 16}, ablate.AblationArguments(examples_per_run="6400"), "run")
    assert argv[argv.index("--max_steps") + 1] == "400"


def _sweep_argv(out, music, tasks="synthetic-style,synthetic-key"):
    return [
        "--output_dir", str(out), "--dataset", "folder", "--data_dir", str(music), "--mask_ratios", "0.5,0.9",
        "--masking_policies", "uniform", "--batch_sizes", "4", "--model_sizes", "small", "--variants", "base",
        "--examples_per_run", "16", "--seeds", "0", "--tasks", tasks, "--synthetic_sizes", "20,10,10",
        "--synthetic_duration", "4", "--checkpoints_per_run", "2", "--pretrain_args", TINY,
    ]


def test_a_killed_sweep_on_a_folder_reuses_every_finished_stage(tmp_path, monkeypatch):
    """Pre-training data from a folder reaches pretrain.py; a sweep killed during a pre-training and during a run's
    probes continues from the last checkpoint and the finished probes, and a finished sweep recomputes nothing."""
    from myna_common.synthetic import write_synthetic_folder
    from myna_evaluation import probe
    from myna_training import pretrain

    music = tmp_path / "music"
    write_synthetic_folder(music, 6, duration=4.0, audio_format="flac")
    out = tmp_path / "sweep"
    calls = {"pretrain": [], "probe": []}
    real_pretrain, real_probe, real_save = pretrain.main, probe.main, pretrain.save_checkpoint
    kill = {"probe": None, "checkpoint": None}

    def pretrain_spy(argv):
        calls["pretrain"].append(argv)
        return real_pretrain(argv)

    def probe_spy(argv):
        task = argv[argv.index("--tasks") + 1]
        calls["probe"].append(task)
        if kill["probe"] == len(calls["probe"]):
            raise KeyboardInterrupt("killed during the probes")
        return real_probe(argv)

    def save_spy(accelerator, output_dir, step, *rest, **kwargs):
        path = real_save(accelerator, output_dir, step, *rest, **kwargs)
        if kill["checkpoint"] == (os.path.basename(os.path.dirname(output_dir)), step):
            raise KeyboardInterrupt("killed after a checkpoint")
        return path

    monkeypatch.setattr(pretrain, "main", pretrain_spy)
    monkeypatch.setattr(probe, "main", probe_spy)
    monkeypatch.setattr(pretrain, "save_checkpoint", save_spy)
    first, second = "base-small-r0.9-uniform-b4-e16-s0", "base-small-r0.5-uniform-b4-e16-s0"

    # Killed in the second task's probes of the first run, then in the second run's pre-training after step 2 of 4.
    kill["probe"] = 2
    with pytest.raises(KeyboardInterrupt):
        ablate.main(_sweep_argv(out, music))
    assert (out / "runs" / first / "pretrain.json").exists() and not (out / "runs" / first / "result.json").exists()
    argv = calls["pretrain"][0]
    assert argv[argv.index("--dataset") + 1] == "folder" and argv[argv.index("--data_dir") + 1] == str(music)
    kill["probe"], kill["checkpoint"] = None, (second, 2)
    calls["pretrain"].clear(), calls["probe"].clear()
    with pytest.raises(KeyboardInterrupt):
        ablate.main(_sweep_argv(out, music))
    assert len(calls["pretrain"]) == 1 and calls["probe"] == ["synthetic-key"]  # the first run's pre-training kept

    kill["checkpoint"] = None
    calls["pretrain"].clear(), calls["probe"].clear()
    report = ablate.main(_sweep_argv(out, music))
    assert len(calls["pretrain"]) == 1 and "--resume_from_checkpoint" in calls["pretrain"][0]
    resumed = json.loads((out / "runs" / second / "pretrain.json").read_text())
    assert resumed["resumed_at_step"] == 2 and resumed["steps"] == 4 and resumed["cpu_seconds"] > 0
    assert calls["probe"] == ["synthetic-style", "synthetic-key"]
    identity = json.loads((out / "runs" / second / "pretrain" / "run.json").read_text())
    assert identity["settings"]["dataset"] == "folder" and identity["settings"]["data_dir"] == str(music)
    assert [r["mask_ratio"] for r in report["runs"]] == [0.9, 0.5]
    assert all(r["steps"] == 4 and 0.0 <= r["tasks"]["synthetic-style"]["test"] <= 1.0 for r in report["runs"])
    table = (out / "results.md").read_text()
    assert "| 0.9 | 1 | 4 |" in table and "synthetic-key (weighted_score)" in table
    assert (out / "metric_vs_mask_ratio.png").stat().st_size > 1000
    assert (out / "metric_vs_cpu_seconds.png").stat().st_size > 1000
    assert not (out / "runs" / first / "pretrain" / "checkpoints").exists()

    # Finished: a rerun computes nothing and gives the same report.
    calls["pretrain"].clear(), calls["probe"].clear()
    again = ablate.main(_sweep_argv(out, music))
    assert calls == {"pretrain": [], "probe": []} and again["runs"] == report["runs"]


def _fake_stages(monkeypatch) -> dict:
    """pretrain.py and probe.py replaced by instant stand-ins that write what the runner reads (a model folder, a
    probe report), so that reuse can be tested in milliseconds; returns the calls they receive."""
    from myna_evaluation import probe
    from myna_training import pretrain

    calls = {"pretrain": [], "probe": []}

    def fake_pretrain(argv):
        calls["pretrain"].append(argv)
        model_dir = os.path.join(argv[argv.index("--output_dir") + 1], "model")
        os.makedirs(model_dir, exist_ok=True)
        return {"model_dir": model_dir, "run_id": "fake", "steps": 4, "examples_seen": 16, "cpu_seconds": 1.0,
                "resumed_at_step": None, "last_loss": 1.0}

    def fake_probe(argv):
        task, output_dir = argv[argv.index("--tasks") + 1], argv[argv.index("--output_dir") + 1]
        calls["probe"].append(task)
        report = {"tasks": {task: {"test_metrics": {"accuracy": 0.5}, "valid_score": 0.5, "patch_mode": "square"}}}
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(report, f)
        return report

    monkeypatch.setattr(pretrain, "main", fake_pretrain)
    monkeypatch.setattr(probe, "main", fake_probe)
    return calls


def _one_run_argv(out, *extra):
    return [
        "--output_dir", str(out), "--mask_ratios", "0.9", "--masking_policies", "uniform", "--batch_sizes", "4",
        "--variants", "base", "--examples_per_run", "16", "--seeds", "0", "--tasks", "synthetic-key",
        "--num_clips", "16", *extra,
    ]


RUN = "base-small-r0.9-uniform-b4-e16-s0"


def test_a_repeated_sweep_reuses_the_stages_it_recorded(tmp_path, monkeypatch):
    calls = _fake_stages(monkeypatch)
    report = ablate.main(_one_run_argv(tmp_path))
    assert len(calls["pretrain"]) == 1 and calls["probe"] == ["synthetic-key"]
    run = tmp_path / "runs" / RUN
    pretrained = json.loads((run / "pretrain.json").read_text())["fingerprint"]
    assert pretrained["--num_clips"] == 16 and pretrained["--pretrain_args"] == "" and pretrained["seed"] == 0
    assert "--tasks" not in pretrained and {"myna-hf", "torch"} <= set(pretrained)  # probes are not the pre-training's
    assert json.loads((run / "result.json").read_text())["fingerprint"]["--tasks"] == "synthetic-key"
    assert json.loads((run / "eval" / "synthetic-key" / "fingerprint.json").read_text())["task"] == "synthetic-key"
    calls["pretrain"].clear(), calls["probe"].clear()
    again = ablate.main(_one_run_argv(tmp_path))
    assert calls == {"pretrain": [], "probe": []} and again["runs"] == report["runs"]
    assert "fingerprint" not in again["runs"][0]


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ((), ("--num_clips", "24"), "was made with --num_clips 16 and this sweep asks for --num_clips 24: "),
        (("--dataset", "folder", "--data_dir", "a"), ("--dataset", "folder", "--data_dir", "b"),
         r"was made with --data_dir \S+/a and this sweep asks for --data_dir \S+/b: "),
        ((), ("--pretrain_args", "--loss infonce"),
         "was made with --pretrain_args '' and this sweep asks for --pretrain_args '--loss infonce': use another "
         "--output_dir/--runs_dir, or delete that run"),
    ],
    ids=["num_clips", "data_dir", "loss"],
)
def test_a_sweep_of_other_data_or_loss_into_one_folder_is_refused_not_reused(
    tmp_path, monkeypatch, capsys, first, second, message
):
    """The run's folder name leaves out the data and the flags: the second sweep must not report the first's
    results as its own. It is refused in one line, before any run (seed 1, a new run, goes first)."""
    from myna_common.cli_support import run_cli

    monkeypatch.chdir(tmp_path)
    calls = _fake_stages(monkeypatch)
    ablate.main(_one_run_argv(tmp_path / "sweep", *first))
    result = (tmp_path / "sweep" / "runs" / RUN / "result.json").read_text()
    calls["pretrain"].clear(), calls["probe"].clear()
    argv = _one_run_argv(tmp_path / "sweep", *second, "--seeds", "1,0")
    with pytest.raises(ValueError, match=rf"runs/{RUN} {message}"):
        ablate.main(argv)
    assert calls == {"pretrain": [], "probe": []}
    assert (tmp_path / "sweep" / "runs" / RUN / "result.json").read_text() == result
    capsys.readouterr()
    assert run_cli(ablate.main, "ablate.py", argv) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"ablate.py: error: {tmp_path / 'sweep' / 'runs' / RUN} was made with ") and len(err) == 2


def test_new_tasks_or_probe_settings_reuse_the_pretraining_and_probe_again(tmp_path, monkeypatch):
    calls = _fake_stages(monkeypatch)
    ablate.main(_one_run_argv(tmp_path))
    calls["pretrain"].clear(), calls["probe"].clear()
    report = ablate.main(_one_run_argv(tmp_path, "--tasks", "synthetic-key,synthetic-style"))
    assert calls == {"pretrain": [], "probe": ["synthetic-style"]}  # the key task's probes are this sweep's too
    assert set(report["runs"][0]["tasks"]) == {"synthetic-key", "synthetic-style"}
    calls["probe"].clear()
    ablate.main(_one_run_argv(tmp_path, "--tasks", "synthetic-key,synthetic-style", "--synthetic_sizes", "20,10,10"))
    assert calls == {"pretrain": [], "probe": ["synthetic-key", "synthetic-style"]}
    calls["probe"].clear()
    ablate.main(_one_run_argv(tmp_path))  # the first sweep again: its key probes were replaced, so probed again
    assert calls == {"pretrain": [], "probe": ["synthetic-key"]}


def test_a_run_finished_before_stages_recorded_their_settings_is_refused(tmp_path, monkeypatch):
    calls = _fake_stages(monkeypatch)
    ablate.main(_one_run_argv(tmp_path))
    run = tmp_path / "runs" / RUN
    for name in ("pretrain.json", "result.json"):
        record = json.loads((run / name).read_text())
        del record["fingerprint"]
        (run / name).write_text(json.dumps(record))
    calls["pretrain"].clear(), calls["probe"].clear()
    with pytest.raises(ValueError, match="was made before runs recorded their settings.*delete that run"):
        ablate.main(_one_run_argv(tmp_path))
    assert calls == {"pretrain": [], "probe": []}


def _fake_run(seed, key, auc, cpu, **point):
    base = {
        "variant": "base", "model_size": "small", "crop_frames": None, "mask_ratio": 0.9, "mask_schedule": "constant",
        "masking_policy": "uniform", "batch_size": 64, "recipe": "", "examples": 6400,
    }
    return {
        **base, **point, "seed": seed, "steps": 100, "cpu_seconds": cpu,
        "tasks": {
            "dev-key": {"test_metrics": {"weighted_score": key, "accuracy": key - 0.1}},
            "dev-tags": {"test_metrics": {"roc_auc_macro": auc, "average_precision_macro": auc - 0.3}},
        },
    }


def test_seeds_give_a_mean_and_a_95_percent_t_interval(tmp_path):
    runs = [_fake_run(s, k, a, c) for s, k, a, c in ((0, 0.60, 0.80, 100.0), (1, 0.62, 0.82, 110.0),
                                                       (2, 0.67, 0.81, 120.0))]
    runs.append(_fake_run(0, 0.5, 0.7, 50.0, mask_ratio=0.5))  # one seed only: no interval
    points = ablate.aggregate(runs)
    assert [p["seeds"] for p in points] == [[0, 1, 2], [0]]
    key = points[0]["tasks"]["dev-key"]["weighted_score"]
    # mean 63.0; sample sd of (60, 62, 67) = 3.606; t(0.975, 2 dof) = 4.303: half-width 4.303 * 3.606 / sqrt(3)
    assert key["mean"] == pytest.approx(63.0)
    assert key["half_width"] == pytest.approx(4.302653 * 3.605551 / 3**0.5, rel=1e-5)
    assert key["values"] == pytest.approx([60.0, 62.0, 67.0])
    assert set(points[0]["tasks"]["dev-tags"]) == {"roc_auc_macro", "average_precision_macro"}
    assert points[0]["cpu_seconds"]["mean"] == pytest.approx(110.0)
    assert points[1]["tasks"]["dev-key"]["weighted_score"]["half_width"] != points[1]["tasks"]["dev-key"][
        "weighted_score"]["half_width"]  # NaN: one seed

    args = ablate.AblationArguments(output_dir=str(tmp_path), dataset="folder", data_dir="/music")
    baselines = {"handcrafted:all": {"dev-key": {"weighted_score": 73.3}, "dev-tags": {"roc_auc_macro": 90.1}}}
    table = ablate.render_markdown(points, args, 60.0, baselines)
    assert "| 0.9 | 3 | 100 | 1.8 ± 0.4 | 63.0 ± 9.0 |" in table
    assert "| 0.5 | 1 | 100 | 0.8 | 50.0 |" in table
    assert "| `handcrafted:all` |  |  | 0 | 73.3 |" in table and "folder /music" in table
    plots = ablate.plot_results(points, points[0], str(tmp_path), baselines)
    assert {os.path.basename(p) for p in plots} == {
        "metric_vs_mask_ratio.png", "metric_vs_cpu_seconds.png", "metric_vs_examples.png"
    }
    # Honest axes: from the metric's floor (chance for ROC-AUC), not zoomed on the points.
    assert ablate._y_limits("roc_auc_macro", [79.0, 81.0], [83.0, 90.1]) == (50.0, 100.0)
    assert ablate._y_limits("weighted_score", [55.0], [72.0, 73.3]) == (0.0, 80.0)
    assert ablate._y_limits("r2_tempo", [-4.0], [8.0]) == (-6.0, 20.0)


def test_sweep_factors_recipes_and_the_eta():
    args = ablate.AblationArguments(
        mask_ratios="0.9", mask_schedules="constant,linear:0.5", masking_policies="uniform", batch_sizes="64",
        crop_frames="48,96", model_sizes="small,256x2", variants="base", recipes="plain=;views4=--num_views 4",
        examples_per_run="1000,4000",
    )
    points = ablate.sweep_points(args)
    assert len(points) == 2 * 5 and [p["examples"] for p in points] == [1000] * 5 + [4000] * 5
    argv = ablate.pretrain_argv(
        {**points[0], "mask_schedule": "linear:0.5", "model_size": "256x2", "recipe": "views4"}, args, "run", seed=2
    )
    text = " ".join(argv)
    assert "--mask_ratio_schedule linear --mask_ratio_start 0.5" in text and "--chunk_frames 48" in text
    assert "--hidden_size 256 --num_hidden_layers 2 --num_attention_heads 8" in text
    assert text.endswith("--seed 2 --num_views 4")
    for bad, message in (({"recipes": "views4 --num_views 4"}, "name=flags"), ({"mask_schedules": "linear"}, "START"),
                         ({"model_sizes": "huge"}, "WIDTHxDEPTH")):
        with pytest.raises(ValueError, match=message):
            ablate.sweep_points(ablate.AblationArguments(**bad))
    eta = ablate.ETA()
    assert eta.text([{"examples": 100}]) == "after the first run"
    eta.add({"examples": 100, "pretrain_seconds": 360.0, "probe_seconds": 360.0}, pretrained=True, probed=True)
    assert eta.text([{"examples": 100}, {"examples": 0}]) == "about 0.3 h for 2 run(s) left"  # 360 + 2 x 360 s


def test_policy_pictures(tmp_path):
    paths = ablate.main(["--plot_policies", str(tmp_path)])["plots"]
    assert len(paths) == 6 and all(100 < (tmp_path / p.split("/")[-1]).stat().st_size < 100_000 for p in paths)


@pytest.mark.parametrize("policy", ["saliency", "frequency_band", "complementary"])
def test_pretraining_draws_the_policys_masks_with_a_ratio_schedule(tmp_path, policy, monkeypatch):
    from modeling_myna import masking
    from myna_training import pretrain

    calls = []
    original = masking.MynaMaskingPolicy.__call__

    def recording(self, grid_size, num_kept, batch_size, **kwargs):
        calls.append((self.name, grid_size, num_kept))
        return original(self, grid_size, num_kept, batch_size, **kwargs)

    monkeypatch.setattr(masking.MynaMaskingPolicy, "__call__", recording)
    summary = pretrain.main(TINY.split() + [
        "--variant", "hybrid", "--masking_policy", policy, "--mask_ratio_schedule", "linear", "--mask_ratio_start",
        "0.5", "--output_dir", str(tmp_path / "run"), "--num_clips", "16", "--per_device_batch_size", "8",
        "--max_steps", "3", "--warmup_steps", "1", "--checkpointing_steps", "0", "--probe_clips", "0",
    ])
    assert summary["steps"] == 3
    # Square (8 x 6) then vertical (1 x 48) per step; the ratio goes 0.5 -> 0.7 -> 0.9: 24, 15, 5 kept of 48.
    expected = [((8, 6), 24), ((1, 48), 24), ((8, 6), 15), ((1, 48), 15), ((8, 6), 5), ((1, 48), 5)]
    assert [c[1:] for c in calls] == expected
    assert {c[0] for c in calls} == {policy}


def test_pretraining_with_three_views_per_clip_counts_its_cpu_time(tmp_path, monkeypatch):
    from modeling_myna import masking
    from myna_training import pretrain

    calls = []
    original = masking.MynaMaskingPolicy.__call__

    def recording(self, grid_size, num_kept, batch_size, **kwargs):
        noise = original(self, grid_size, num_kept, batch_size, **kwargs)
        calls.append((kwargs["num_views"], tuple(noise.shape)))
        return noise

    monkeypatch.setattr(masking.MynaMaskingPolicy, "__call__", recording)
    summary = pretrain.main(TINY.split() + [
        "--num_views", "3", "--output_dir", str(tmp_path / "run"), "--num_clips", "16", "--per_device_batch_size",
        "8", "--max_steps", "2", "--warmup_steps", "1", "--checkpointing_steps", "0", "--probe_clips", "0",
    ])
    assert calls == [(3, (24, 48))] * 2  # 3 views x 8 clips, 48 tokens each (16x16 patches of 128 x 96)
    assert summary["num_views"] == 3 and 0 < summary["cpu_seconds"] == summary["session_cpu_seconds"]
    with pytest.raises(ValueError, match="num_views=1"):
        pretrain.main(["--num_views", "1"])


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from myna_training import pretrain

    common = TINY.split() + [
        "--num_clips", "16", "--per_device_batch_size", "8", "--max_steps", "2", "--warmup_steps", "1",
        "--checkpointing_steps", "0", "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    pretrain.main(common + ["--output_dir", str(tmp_path / "plain")])
    pretrain.main(common + ["--output_dir", str(tmp_path / "checkpointed"), "--gradient_checkpointing"])
    plain = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    checkpointed = load_file(tmp_path / "checkpointed" / "model" / "model.safetensors")
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value)


def test_help_and_the_cache_key_of_a_folder_sweep(capsys):
    with pytest.raises(SystemExit) as stop:
        ablate.main(["--help"])
    assert stop.value.code == 0 and "95% interval" in capsys.readouterr().out
    point = ablate.sweep_points(ablate.AblationArguments(variants="base", batch_sizes="8"))[0]
    # --num_clips only counts for the generated corpus; passed for a folder it would change the spectrogram cache key.
    folder = ablate.pretrain_argv(point, ablate.AblationArguments(dataset="folder", data_dir="/music"), "run")
    synthetic = ablate.pretrain_argv(point, ablate.AblationArguments(num_clips=32), "run")
    assert "--num_clips" not in folder and synthetic[synthetic.index("--num_clips") + 1] == "32"


def test_the_curve_probes_every_checkpoint_of_one_pretraining(tmp_path, monkeypatch):
    """--curve exports each kept checkpoint as a model (the last one equals pretrain.py's export), probes it, and
    tables quality against the run's CPU-seconds at that checkpoint; a rerun probes nothing again. Several seeds of
    one recipe give each step's mean; two runs of one seed, or of two recipes, are refused."""
    from safetensors.torch import load_file

    from myna_evaluation import probe
    from myna_training import pretrain

    run = tmp_path / "run"
    pretrain.main(TINY.split() + [
        "--variant", "hybrid", "--output_dir", str(run), "--num_clips", "16", "--per_device_batch_size", "8",
        "--max_steps", "4", "--warmup_steps", "1", "--checkpointing_steps", "2", "--checkpoints_total_limit", "0",
        "--probe_clips", "0",
    ])
    probed, real_probe = [], probe.main
    monkeypatch.setattr(probe, "main", lambda argv: probed.append(argv) or real_probe(argv))
    argv = [
        "--curve", str(run), "--output_dir", str(tmp_path / "curve"), "--tasks", "synthetic-key",
        "--synthetic_sizes", "20,10,10", "--synthetic_duration", "4",
    ]
    report = ablate.main(argv)
    assert [r["steps"] for r in report["runs"]] == [2, 4] and [r["examples"] for r in report["runs"]] == [16, 32]
    assert 0 < report["runs"][0]["cpu_seconds"] < report["runs"][1]["cpu_seconds"]
    assert report["runs"][0]["variant"] == "hybrid" and report["runs"][0]["batch_size"] == 8
    assert 0.0 <= report["runs"][1]["tasks"]["synthetic-key"]["test"] <= 1.0
    exported = load_file(tmp_path / "curve" / "curve" / "seed0" / "step-4" / "model" / "model.safetensors")
    for key, value in load_file(run / "model" / "model.safetensors").items():
        torch.testing.assert_close(exported[key], value)
    table = (tmp_path / "curve" / "curve.md").read_text()
    assert "| 16 | 1 | 2 |" in table and "folder" not in table and "generated corpus" in table
    assert (tmp_path / "curve" / "curve.png").stat().st_size > 1000
    assert len(probed) == 2
    again = ablate.main(argv + ["--curve_steps", "4"])
    assert len(probed) == 2 and [r["steps"] for r in again["runs"]] == [4]
    with pytest.raises(ValueError, match="no checkpoints at steps 3"):
        ablate.main(argv + ["--curve_steps", "3"])

    # Seeds of one recipe: each step's row is their mean; seed 0's probes are reused.
    pretrain_argv = TINY.split() + [
        "--variant", "hybrid", "--num_clips", "16", "--per_device_batch_size", "8", "--max_steps", "4",
        "--warmup_steps", "1", "--checkpointing_steps", "2", "--checkpoints_total_limit", "0", "--probe_clips", "0",
    ]
    pretrain.main(pretrain_argv + ["--output_dir", str(tmp_path / "seed1"), "--seed", "1"])
    seeds = ablate.main(argv[:1] + [f"{run},{tmp_path / 'seed1'}"] + argv[2:])
    assert len(probed) == 4 and [(r["steps"], r["seed"]) for r in seeds["runs"]] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    values = [r["tasks"]["synthetic-key"]["test_metrics"]["weighted_score"] for r in seeds["runs"][2:]]
    last = seeds["points"][-1]
    assert last["seeds"] == [0, 1] and last["steps"] == 4
    assert last["tasks"]["synthetic-key"]["weighted_score"]["mean"] == pytest.approx(50 * sum(values))
    assert "| 32 | 2 | 4 |" in (tmp_path / "curve" / "curve.md").read_text()
    with pytest.raises(ValueError, match="both pre-trained with --seed 0"):
        ablate.main(argv[:1] + [f"{run},{run}"] + argv[2:])
    pretrain.main(pretrain_argv + ["--output_dir", str(tmp_path / "other"), "--seed", "2", "--mask_ratio", "0.5"])
    with pytest.raises(ValueError, match=r"different recipes \(mask_ratio differ\)"):
        ablate.main(argv[:1] + [f"{run},{tmp_path / 'other'}"] + argv[2:])


def test_three_views_read_out_of_core_train_as_the_resident_bank_does(tmp_path):
    # The prefetcher's slots hold `num_views` buffers: three views read from disk follow the same plan as the
    # resident bank, so the two runs end with the same weights.
    from safetensors.torch import load_file

    from myna_training import pretrain

    common = TINY.split() + [
        "--num_views", "3", "--num_clips", "16", "--per_device_batch_size", "8", "--max_steps", "2",
        "--warmup_steps", "1", "--checkpointing_steps", "0", "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    for placement in ("resident", "out_of_core"):
        pretrain.main(common + ["--spectrogram_placement", placement, "--output_dir", str(tmp_path / placement)])
    resident = load_file(tmp_path / "resident" / "model" / "model.safetensors")
    out_of_core = load_file(tmp_path / "out_of_core" / "model" / "model.safetensors")
    for name in resident:
        torch.testing.assert_close(out_of_core[name], resident[name], rtol=0, atol=1e-6, msg=name)


def test_a_curve_names_what_no_other_column_does():
    """The curve's recipe column names a log input, an MLP projection head, the statistics loss (and its targets) and
    a hybrid's tokenizer weights, and nothing for the paper's defaults or an older run's settings that lack them."""
    from myna_training.ablation.curve import curve_point

    settings = {"variant": "hybrid", "model_size": "small", "mask_ratio": 0.9, "masking_policy": "uniform",
                "per_device_batch_size": 128}
    assert curve_point(settings)["recipe"] == ""
    assert curve_point({**settings, "input_scale": "power", "projection_hidden_size": 0})["recipe"] == ""
    assert curve_point({**settings, "input_scale": "log"})["recipe"] == "input_scale=log"
    both = curve_point({**settings, "input_scale": "mixed", "projection_hidden_size": 512})
    assert both["recipe"] == "input_scale=mixed,projection_hidden_size=512"
    statistics = curve_point({**settings, "statistics_loss_weight": 3.0, "tokenizer_loss_weights": [3.0, 1.0]})
    assert statistics["recipe"] == "statistics_loss_weight=3,tokenizer_loss_weights=3:1"
    assert curve_point({**settings, "statistics_loss_weight": 0.0, "tokenizer_loss_weights": None})["recipe"] == ""
    delta = curve_point({**settings, "statistics_loss_weight": 3.0, "statistics_targets": ["mean", "std", "delta"]})
    assert delta["recipe"] == "statistics_loss_weight=3,statistics_targets=mean:std:delta"
    assert curve_point({**settings, "statistics_targets": ["mean", "std"]})["recipe"] == ""  # the default
