"""The README runs as written: every `bash` and `python` block, top to bottom, in a fresh folder (as a new user on a
fresh clone would), so that the README cannot drift from the code.

Stand-ins keep it to a minute on CPU and offline: `make demo` and the pre-training commands run with a tiny model and
a few steps (the flags are appended, so they override the README's), the probe with its fast grid on a few generated
clips, and the download of `myna-hybrid.pth` is a tiny released-layout checkpoint. Shell commands run in this
process, through the same `main` functions as the console scripts. A block preceded by `<!-- readme-test: skip
(reason) -->` needs data no test has; the test checks that every skip gives its reason.
"""

import os
import re
import shlex

import pytest
import torch

import modeling_myna  # noqa: F401
from modeling_myna import convert_original_checkpoint
from myna_evaluation import export, probe
from myna_pipelines import cli
from myna_training import finetune, pretrain

from .reference_vit import ReferenceMyna


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<skip>[^)]+)\) -->\n)?```(?P<lang>[\w-]*)\n(?P<code>.*?)```", re.S)
TINY_PRETRAIN = [
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--num_clips", "16", "--clip_seconds", "4", "--per_device_batch_size", "8", "--max_steps", "2",
    "--warmup_steps", "0", "--checkpointing_steps", "0", "--probe_clips", "0",
]
TINY_FINETUNE = [
    "--synthetic_sizes", "24,12,12", "--synthetic_duration", "4", "--num_train_epochs", "1",
    "--per_device_train_batch_size", "8", "--preprocessing_num_workers", "1",
]
TINY_PROBE = [
    "--fast", "--synthetic_sizes", "24,12,12", "--synthetic_duration", "4", "--max_epochs", "3", "--no_tsne",
    "--progress", "false", "--num_threads", "1",
]


def readme_blocks() -> list[tuple[str, str, str | None]]:
    """`(language, code, skip reason or None)` of every fenced block, in order."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    return [(m["lang"], m["code"], m["skip"]) for m in BLOCK.finditer(text)]


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    return [argv for line in code.replace("\\\n", " ").splitlines() if (argv := shlex.split(line, comments=True))]


def released_checkpoint_stand_in(path: str) -> None:
    """A tiny state dict in the released Myna-Hybrid layout, instead of the download."""
    torch.manual_seed(0)
    model = ReferenceMyna((16, 16), patch_b=(128, 2), dim=32, depth=1, heads=1, dim_head=64, mlp_dim=64, num_outputs=8)
    torch.save(model.state_dict(), path)


def run_command(argv: list[str]) -> None:
    if argv[0] == "make":
        assert argv[1:] in (["demo"], ["test"]), argv
        if argv[1] == "demo":  # what the Makefile runs, tiny
            pretrain.main(TINY_PRETRAIN + ["--overwrite_output_dir"])
        return  # `make test` is this suite
    if argv[0] == "accelerate":
        script = argv.index("training/pretrain.py")
        pretrain.main(argv[script + 1 :] + TINY_PRETRAIN)
    elif argv[0] == "myna":
        assert cli.main(argv[1:]) == 0, argv
    elif argv[:3] == ["python", "-m", "modeling_myna.convert_original_checkpoint"]:
        checkpoint = argv[argv.index("--checkpoint") + 1]
        if not os.path.exists(checkpoint):
            released_checkpoint_stand_in(checkpoint)
        convert_original_checkpoint.main(argv[3:])
    elif argv[:2] == ["python", "evaluation/probe.py"]:
        probe.main(argv[2:] + TINY_PROBE)
    elif argv[:2] == ["python", "evaluation/export.py"]:
        export.main(argv[2:])
    elif argv[:2] == ["python", "training/finetune.py"]:
        finetune.main(argv[2:] + TINY_FINETUNE)
    else:
        pytest.fail(f"the README runs {' '.join(argv)!r}, which this test has no stand-in for: add one")


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) > 10
    for lang, code, skip in blocks:
        assert lang in ("bash", "python", "text", "yaml", "bibtex"), lang
        if skip is not None:
            assert len(skip) > 10, "a skipped block says why"
    for lang, code, skip in blocks:
        if lang == "bash" and skip is None:
            for argv in shell_commands(code):
                assert argv[0] in ("make", "accelerate", "myna", "python"), argv


def test_the_readme_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for folder in ("training", "evaluation"):  # the paths the README's commands name, as in a clone
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    ran = []
    for index, (lang, code, skip) in enumerate(readme_blocks()):
        if skip is not None or lang not in ("bash", "python"):
            continue
        if lang == "python":
            exec(compile(code, f"README.md block {index}", "exec"), {"__name__": f"readme_block_{index}"})
        else:
            for argv in shell_commands(code):
                run_command(argv)
        ran.append(index)
    assert len(ran) >= 12
    # What the README promises the commands leave behind.
    assert sorted(os.listdir("outputs/myna-pretrain")) == ["cache", "checkpoints", "model", "run.json"]  # logs/: trackers
    for path in ("embeddings.npz", "timeline.parquet", "vertical.npz", "myna-hybrid/config.json",
                 "outputs/eval/table.md", "myna-style/config.json", "outputs/my-run/model/model.safetensors"):
        assert os.path.exists(path), path
    assert "Syn key: mean mir_eval weighted key score" in open("outputs/eval/table.md").read()
