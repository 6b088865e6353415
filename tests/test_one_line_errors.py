"""Mistakes in files answer in one line naming the file and the fix: a YAML/JSON syntax error in a task file or a
--config file (pre-training and fine-tuning), a folder given as --config."""

import pytest

from myna_common.cli_support import run_cli
from myna_evaluation.task_families.custom import TaskFileError, read_task_file
from myna_training.arguments import parse_arguments


BROKEN = "model_size: vit-t\nmax_steps: [1\nlearning_rate: : 1\n"


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text(BROKEN)
    with pytest.raises(ValueError, match=r"broken.yaml is not valid YAML \(line 3, column \d+: .*fix that line"):
        parse_arguments(["--config", str(config)])
    assert run_cli(parse_arguments, "pretrain.py", ["--config", str(config)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("pretrain.py: error: config file") and "Traceback" not in err[1]
    config.write_text("max_steps: 10\nhidden_size 64\n")  # a colon left out, noticed on the next line
    with pytest.raises(ValueError, match=r"could not find expected ':', while scanning a simple key at line 2, "):
        parse_arguments(["--config", str(config)])
    task = tmp_path / "task.yaml"
    task.write_text("name: x\npath: labels.csv\n  label_column: [\n")
    with pytest.raises(TaskFileError, match=r"task file .*task.yaml is not valid YAML \(line 3"):
        read_task_file(str(task))
    data = tmp_path / "broken.json"
    data.write_text('{"max_steps": 1,}')
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON \(line 1, column 17"):
        parse_arguments([str(data)])


def test_finetuning_reports_its_config_file_in_one_line_too(tmp_path):
    from myna_training.finetune_arguments import parse_finetune_arguments

    config = tmp_path / "finetune.yaml"
    config.write_text("task: synthetic-style\nlearning_rate: [\n")
    with pytest.raises(ValueError, match=r"finetune.yaml is not valid YAML \(line 3"):
        parse_finetune_arguments(["--config", str(config)])


def test_a_folder_as_config_lists_its_files(tmp_path):
    (tmp_path / "a.yaml").write_text("max_steps: 1\n")
    with pytest.raises(ValueError, match=rf"--config {tmp_path} is a folder; pass one file in it: a.yaml"):
        parse_arguments(["--config", str(tmp_path)])


def test_model_names_that_are_neither_a_folder_nor_reachable_answer_at_once(tmp_path, monkeypatch, capsys):
    from myna_common.cli_support import UsageError, check_model_name
    from myna_pipelines.cli import main as myna

    with pytest.raises(UsageError, match=r"no folder named myna-hybrid here .*convert it first: python -m "
                                         r"modeling_myna.convert_original_checkpoint --checkpoint myna-hybrid.pth "
                                         r"--variant hybrid --output myna-hybrid"):
        check_model_name("myna-hybrid")
    with pytest.raises(UsageError, match="no folder named outputs/none/model here .*make demo"):
        check_model_name("outputs/none/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="not in the Hub cache while HF_HUB_OFFLINE is set"):
        check_model_name("someone/not-cached")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(UsageError, match="the Hub cannot be reached"):
        check_model_name("someone/not-cached", reachable=lambda: False)
    assert check_model_name("someone/not-cached", reachable=lambda: True) == "someone/not-cached"
    assert check_model_name(str(tmp_path)) == str(tmp_path)
    (tmp_path / "run" / "model").mkdir(parents=True)
    with pytest.raises(UsageError, match=rf"Did you mean '{tmp_path / 'run' / 'model'}'\?"):
        check_model_name(str(tmp_path / "run" / "modle"))
    with pytest.raises(UsageError, match=r"no folder named myna-hybird here .*Did you mean 'myna-hybrid'\?"):
        check_model_name("myna-hybird")

    assert myna(["info", "myna-vertical"]) == 2  # no Hub retries: the network is never tried for this name
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--variant vertical --output myna-vertical" in err[0]


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_fp16_that_a_cpu_cannot_honour_is_refused(tmp_path, fresh_accelerate_state):
    import torch

    from myna_training import pretrain

    if torch.cuda.is_available():
        pytest.skip("fp16 is honoured on a GPU")
    with pytest.raises(ValueError, match="mixed precision fp16 cannot be used on cpu.*--mixed_precision bf16"):
        pretrain.main(["--config", "cpu-smoke.yaml", "--mixed_precision", "fp16", "--output_dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # refused before anything is written
