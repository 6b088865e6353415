"""The README and the documentation run as written: every `bash` and `python` block of README.md, then of every page
of the site in its menu's order (mkdocs.yml's `nav`), top to bottom in one fresh folder (as a new user on a fresh
clone would, reading on from the README), so that neither can drift from the code.

Stand-ins keep it to a few minutes on CPU and offline: `make demo` and the pre-training commands run with a tiny model
and a few steps (the flags are appended, so they override the page's), the probe with its fast grid on a few generated
clips, fine-tuning one epoch, and the download of `myna-hybrid.pth` is a tiny released-layout checkpoint. Shell
commands run in this process, through the same `main` functions as the console scripts. A block preceded by
`<!-- readme-test: skip (reason) -->` needs data no test has; the test checks that every skip gives its reason. The README's set-up is two
commands, `make demo` and `make test`, then `source .venv/bin/activate`; CI (`.ci/run`) runs its test command.
"""

import os
import re
import shlex

import pytest
import torch
import yaml

import modeling_myna  # noqa: F401
from modeling_myna import convert_original_checkpoint
from myna_evaluation import export, probe
from myna_pipelines import cli
from myna_training import finetune, pretrain

from .reference_vit import ReferenceMyna


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A skip marker stands right above its block; the pages leave a blank line between them (Python-Markdown, which
# builds the site, reads a comment and the lines right after it as one block of raw HTML).
SKIP = r"<!-- readme-test: skip \((?P<skip>[^)]+)\) -->\n\n?"
BLOCK = re.compile(rf"(?:{SKIP})?```(?P<lang>[\w-]*)\n(?P<code>.*?)```", re.S)
SETUP = [["make", "demo"], ["make", "test"]]
ACTIVATE = ["source", ".venv/bin/activate"]
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


def documentation_pages() -> list[str]:
    """README.md, then the site's pages (paths from the repository's root) in the order of mkdocs.yml's menu."""

    def pages(entries) -> list[str]:
        found = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [value]
        return found

    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    return ["README.md"] + [os.path.join(config.get("docs_dir", "docs"), page) for page in pages(config["nav"])]


def page_blocks(page: str) -> list[tuple[str, str, str | None]]:
    """`(language, code, skip reason or None)` of every fenced block of one page, in order."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    blocks = [(m["lang"], m["code"], m["skip"]) for m in BLOCK.finditer(text)]
    markers = len(re.findall(r"^<!-- readme-test", text, re.M))
    skipped = sum(skip is not None for _, _, skip in blocks)
    assert markers == skipped, f"{page}: a skip marker that is not right above its block"
    return blocks


def documentation_blocks() -> list[tuple[str, int, str, str, str | None]]:
    """`(page, index, language, code, skip reason or None)` of every block of the README and the pages, in order."""
    return [(page, index, *block) for page in documentation_pages() for index, block in enumerate(page_blocks(page))]


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped."""
    return [argv for line in code.replace("\\\n", " ").splitlines() if (argv := shlex.split(line, comments=True))]


def released_checkpoint_stand_in(path: str) -> None:
    """A tiny state dict in the released Myna-Hybrid layout, instead of the download."""
    torch.manual_seed(0)
    model = ReferenceMyna((16, 16), patch_b=(128, 2), dim=32, depth=1, heads=1, dim_head=64, mlp_dim=64, num_outputs=8)
    torch.save(model.state_dict(), path)


def run_command(argv: list[str]) -> None:
    if argv[0] == "source":
        assert argv == ACTIVATE, argv  # this test already runs inside the environment
        return
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
        pytest.fail(f"the documentation runs {' '.join(argv)!r}, which this test has no stand-in for: add one")


def test_every_block_is_run_or_says_why_not():
    pages = documentation_pages()
    assert pages[:2] == ["README.md", "docs/index.md"] and len(pages) == len(set(pages)), pages
    for page in pages:
        assert os.path.isfile(os.path.join(ROOT, page)), f"mkdocs.yml's nav names {page}, which does not exist"
    on_disk = {os.path.join("docs", name) for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md")}
    assert on_disk <= set(pages), f"pages missing from mkdocs.yml's nav: {sorted(on_disk - set(pages))}"
    blocks = documentation_blocks()
    assert len(blocks) > 10
    for page, index, lang, code, skip in blocks:
        assert lang in ("bash", "python", "text", "yaml", "bibtex"), (page, index, lang)
        if skip is not None:
            assert len(skip) > 10, f"{page} block {index}: a skipped block says why"
    for page, index, lang, code, skip in blocks:
        if lang == "bash" and skip is None:
            for argv in shell_commands(code):
                assert argv[0] in ("make", "accelerate", "myna", "python", "source"), (page, index, argv)


def test_the_setup_is_two_commands_and_ci_runs_the_test_one():
    """The README's set-up: `make demo` (the main job), `make test`, nothing else; then the environment is activated,
    in a block of its own, before any other command; CI runs the README's test command."""
    bash = [shell_commands(code) for lang, code, skip in page_blocks("README.md") if lang == "bash" and skip is None]
    assert bash[0] == SETUP, bash[0]
    assert bash[1] == [ACTIVATE], bash[1]
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = shell_commands(f.read())
    assert ci[-1] == SETUP[1], f".ci/run runs {ci[-1]}, the README's test command is {SETUP[1]}"


def test_the_readme_and_the_docs_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for folder in ("training", "evaluation"):  # the paths the README's commands name, as in a clone
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    ran = []
    for page, index, lang, code, skip in documentation_blocks():
        if skip is not None or lang not in ("bash", "python"):
            continue
        if lang == "python":
            exec(compile(code, f"{page} block {index}", "exec"), {"__name__": f"docs_block_{len(ran)}"})
        else:
            for argv in shell_commands(code):
                run_command(argv)
        ran.append((page, index))
    assert len(ran) >= 20
    assert {page for page, _ in ran} >= {"README.md", "docs/embedding.md", "docs/pretraining.md", "docs/evaluation.md"}
    # What the README's tour and the pages promise the commands leave behind.
    assert sorted(os.listdir("outputs/myna-pretrain")) == ["cache", "checkpoints", "model", "run.json"]  # logs/: trackers
    for path in ("song.npz", "library/data", "library-index/index.json", "outputs/myna-smoke/model/config.json",
                 "outputs/eval-smoke/table.md", "embeddings.npz", "timeline.parquet", "vertical.npz",
                 "myna-hybrid/config.json", "outputs/eval/table.md", "myna-style/config.json",
                 "outputs/my-run/model/model.safetensors", "outputs/smoke-seed1/model/config.json"):
        assert os.path.exists(path), path
    assert "Syn key: mean mir_eval weighted key score" in open("outputs/eval/table.md").read()
