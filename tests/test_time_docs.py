"""benchmarks/time_docs.py, which writes docs/timings.md: its table, on a trivial command (tests never time the real
ones), and its rows, which must be the commands the documentation gives, word for word."""

import importlib.util
import os
import re

import pytest

from .test_readme import ROOT, page_blocks, shell_commands


@pytest.fixture(scope="module")
def time_docs():
    spec = importlib.util.spec_from_file_location("time_docs", os.path.join(ROOT, "benchmarks", "time_docs.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_measured_row_and_the_rows_not_measured(time_docs, tmp_path):
    timing = time_docs.measure("true", str(tmp_path))
    assert timing.returncode == 0 and timing.wall >= 0 and timing.cpu >= 0 and timing.cores >= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d", timing.date)
    failed = time_docs.measure("exit 3", str(tmp_path))
    assert failed.returncode == 3

    steps = time_docs.STEPS
    table = str(tmp_path / "timings.md")
    rows = {steps[0].id: time_docs.table_row(steps[0], timing), steps[1].id: time_docs.table_row(steps[1], failed)}
    text = time_docs.write_table(table, rows)
    assert time_docs.read_rows(table) == {**{s.id: time_docs.table_row(s, None) for s in steps}, **rows}
    lines = [line for line in text.splitlines() if line.startswith("| <span id=")]
    assert [re.match(r'\| <span id="([\w-]+)">', line)[1] for line in lines] == [s.id for s in steps]
    first = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert first[1] == f"`{steps[0].command}`" and first[2].endswith(" s") and first[5] == str(timing.cores)
    assert "failed (exit 3)" in lines[1] and "not measured yet" in lines[2]
    assert f"2 of {len(steps)} rows measured" in text and "Machine: " in text

    # A later run of some rows keeps the others as they were.
    again = time_docs.table_row(steps[2], timing)
    time_docs.write_table(table, {**time_docs.read_rows(table), steps[2].id: again})
    assert time_docs.read_rows(table) == {
        **{s.id: time_docs.table_row(s, None) for s in steps},
        **rows,
        steps[2].id: again,
    }


def test_the_table_says_when_the_machine_was_busy(time_docs, tmp_path):
    step = time_docs.STEPS[0]
    loaded = time_docs.Timing(90.0, 40.0, 9.5, 10.2, 2, "2026-01-01T10:00")
    quiet = time_docs.Timing(30.0, 40.0, 0.4, 1.1, 2, "2026-01-01T10:00")
    text = time_docs.write_table(str(tmp_path / "t.md"), {step.id: time_docs.table_row(step, loaded)})
    assert "1 of them while other jobs loaded the machine" in text and "1.5 min | 40 s | 9.5 -> 10.2 | 2 |" in text
    text = time_docs.write_table(str(tmp_path / "t.md"), {step.id: time_docs.table_row(step, quiet)})
    assert "on a quiet machine" in text


def test_every_row_is_a_command_the_documentation_gives(time_docs):
    for step in time_docs.STEPS:
        given = [argv for lang, code, _ in page_blocks(step.page) if lang == "bash" for argv in shell_commands(code)]
        assert shell_commands(step.command)[0] in given, f"{step.id}: {step.command!r} is not a command of {step.page}"
    assert len({s.id for s in time_docs.STEPS}) == len(time_docs.STEPS)


def test_only_names_rows(time_docs, capsys):
    with pytest.raises(SystemExit):
        time_docs.main(["--only", "smoke-pretrain,no-such-row"])
    assert "--only names no-such-row, which are not rows" in capsys.readouterr().err
    assert time_docs.main(["--only", "smoke-pretrain", "--list"]) == 0
    assert "cpu-smoke.yaml" in capsys.readouterr().out
