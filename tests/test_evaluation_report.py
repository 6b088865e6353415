"""The paper-style table: layout, Table 1 average (per task first, then over tasks), and the t-SNE plot."""

import numpy as np
import pytest

from myna_evaluation.report import PAPER_ROWS, plot_tsne, render_table, table1_average
from myna_evaluation.tasks import _spec


def paper_results(numbers):
    auc, ap, gtzan, gs, arousal, valence = (n / 100 for n in numbers[:6])
    return {
        "mtt": (_spec("mtt", ""), {"roc_auc_macro": auc, "average_precision_macro": ap}),
        "gtzan": (_spec("gtzan", ""), {"accuracy": gtzan}),
        "giantsteps": (_spec("giantsteps", ""), {"weighted_score": gs}),
        "emomusic": (_spec("emomusic", ""), {"r2_arousal": arousal, "r2_valence": valence}),
    }


@pytest.mark.parametrize("name", list(PAPER_ROWS))
def test_table1_average_reproduces_the_papers_averages(name):
    numbers = PAPER_ROWS[name]
    assert 100 * table1_average(paper_results(numbers)) == pytest.approx(numbers[6], abs=0.051)


def test_render_table_has_the_model_row_then_the_paper_rows():
    table = render_table("my-myna", paper_results(PAPER_ROWS["Myna-Base (paper)"]))
    lines = table.splitlines()
    assert lines[0].startswith("| Model | MTT AUC | MTT AP | GTZAN | GS | Emo A | Emo V | Avg.")
    assert lines[2] == "| my-myna | 90.8 | 39.5 | 78.3 | 63.5 | 73.5 | 55.8 | 67.9 | 67.9 |"
    assert len(lines) == 3 + len(PAPER_ROWS)
    assert lines[3].startswith("| Myna-Base (paper) | 90.8 | 39.5")


def test_render_table_without_all_four_tasks_leaves_the_table1_average_empty():
    results = paper_results(PAPER_ROWS["CLMR (paper)"])
    del results["gtzan"]
    row = render_table("m", results, with_paper=False).splitlines()[2].split(" | ")
    assert row[3] == "–" and row[7] == "–"


def test_tsne_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    embeddings = rng.normal(size=(30, 8)) + labels[:, None] * 3
    path = plot_tsne(embeddings, labels, ["a", "b", "c"], str(tmp_path / "t.png"), "test", num_threads=1)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_one_table_across_paper_marble_and_custom_tasks():
    from myna_evaluation.task_families.marble import marble_spec
    from myna_evaluation.tasks import TaskSpec

    results = paper_results(PAPER_ROWS["Myna-Base (paper)"])
    del results["giantsteps"], results["emomusic"]
    results["nsynth-pitch"] = (marble_spec("nsynth-pitch"), {"accuracy": 0.5})
    results["mtg-genre"] = (marble_spec("mtg-genre"), {"roc_auc_macro": 0.8, "average_precision_macro": 0.2})
    custom = TaskSpec("my_task", "regression", ("a",), "myna_r2", "r2_mean", (("my_task R2", "r2_mean"),))
    results["my_task"] = (custom, {"r2_mean": 0.3})
    lines = render_table("m", results).splitlines()
    assert lines[0] == (
        "| Model | MTT AUC | MTT AP | GTZAN | GS | Emo A | Emo V | Avg. | MTG-G AUC | MTG-G AP | NSynth-P | "
        "MARBLE avg. | my_task R2 | Avg. (run) |"
    )
    row = lines[2].split(" | ")
    assert row[1:4] == ["90.8", "39.5", "78.3"] and row[7] == "–"  # Table 1 average needs all four paper tasks
    assert row[8:11] == ["80.0", "20.0", "50.0"]
    # MARBLE avg.: per task first (MTT 65.15, GTZAN 78.3, MTG-G 50, NSynth-P 50), then over tasks.
    assert float(row[11]) == pytest.approx((65.15 + 78.3 + 50 + 50) / 4, abs=0.05)
    assert row[12] == "30.0"
    assert float(row[13].rstrip(" |")) == pytest.approx((65.15 + 78.3 + 50 + 50 + 30) / 5, abs=0.05)
    assert lines[3].endswith("| 67.9 | – | – | – | – | – | – |")


@pytest.mark.parametrize("num_classes", [5, 12, 24, 30])
def test_every_class_of_a_tsne_gets_its_own_colour(num_classes):
    from myna_evaluation.report import class_styles

    colours, markers = class_styles(num_classes)
    assert len({tuple(round(c, 3) for c in colour) for colour in colours}) == num_classes  # 24 keys: 24 colours
    assert len(set(zip(map(tuple, colours), markers))) == num_classes


def test_the_line_above_the_table_names_the_protocol():
    from myna_evaluation.report import protocol_line

    grid = "JukeMIR grid (216 probes)"
    assert protocol_line(grid, None, 13, "mean") == (
        "Probe protocol: last layer, mean pooling (the paper's); JukeMIR grid (216 probes)."
    )
    assert protocol_line(grid, None, 13, "meanstd") == "Probe protocol: last layer, mean+std pooling; " + grid + "."
    assert protocol_line(grid, list(range(13)), 13, "mean").startswith(
        "Probe protocol: layer chosen on validation (of 13), mean pooling;"
    )
    assert "among 4, 8, 12 (of 13)" in protocol_line(grid, [4, 8, 12], 13, "mean")
    assert "layer 6 (of 13), mean+std pooling;" in protocol_line(grid, [6], 13, "meanstd")
    assert "the features' only layer, mean pooling;" in protocol_line(grid, [0], 1, "mean")  # hand-crafted
    line = protocol_line(grid, None, 13, "mean")
    results = paper_results(PAPER_ROWS["Myna-Base (paper)"])
    lines = render_table("m", results, protocol=line).splitlines()
    assert lines[:3] == [line, "", render_table("m", results).splitlines()[0]]
