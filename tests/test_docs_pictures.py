"""The pictures in docs/ are what their commands draw: `python training/ablate.py --plot_policies docs/masking`
regenerates the masking pictures byte for byte (every draw is seeded), with the matplotlib that drew them."""

import os
import re

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASKING = os.path.join(ROOT, "docs", "masking")


def test_masking_pictures_regenerate_byte_identical(tmp_path):
    import matplotlib

    from myna_training.ablate import plot_policies

    committed = sorted(n for n in os.listdir(MASKING) if n.endswith(".png"))
    with open(os.path.join(MASKING, committed[0]), "rb") as f:
        drawn_with = re.search(rb"Matplotlib version([0-9][0-9.]*[0-9])", f.read(400))
    if drawn_with is None or drawn_with.group(1).decode() != matplotlib.__version__:
        pytest.skip(f"the pictures were drawn with another matplotlib ({drawn_with and drawn_with.group(1)}), whose "
                    "rendering may differ in a few pixels")
    written = plot_policies(str(tmp_path), seed=0)  # what docs/masking.md's command draws (its --seed defaults to 0)
    assert sorted(os.path.basename(p) for p in written) == committed
    for path in written:
        with open(path, "rb") as new, open(os.path.join(MASKING, os.path.basename(path)), "rb") as old:
            assert new.read() == old.read(), f"{os.path.basename(path)} differs from docs/masking: regenerate it"


def test_ablation_table_redraws_from_its_markdown(tmp_path):
    """`benchmarks/redraw_ablation_table.py` reads the runner's table back: factor column, mean ± half-width per
    metric, backticked rows as baselines; and draws the figure from it."""
    import importlib.util

    root = ROOT
    spec = importlib.util.spec_from_file_location("redraw", os.path.join(root, "benchmarks/redraw_ablation_table.py"))
    redraw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(redraw)
    factors, points, baselines = redraw.read_table(os.path.join(root, "docs/ablation-real/batch.md"))
    assert factors == ["batch"]
    assert [p["label"] for p in points] == ["128", "32", "64"]
    assert points[1]["tasks"]["dev-key"]["weighted_score"] == {"mean": 60.8, "half_width": 10.3}
    assert baselines["handcrafted:all"]["dev-instruments"]["roc_auc_macro"] == 90.1
    out = str(tmp_path / "batch.png")
    assert redraw.main([os.path.join(root, "docs/ablation-real/batch.md"), out]) == out
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_generated_corpus_ablation_redraws_two_seeds_with_intervals(tmp_path):
    """`benchmarks/redraw_ablation_results.py` averages the per-seed results files of `docs/ablation/`: the base
    point's key score is the mean of the two seeds' (44.9 and 48.4 in docs/masking.md's table), its interval the
    t-interval of two values (t = 12.71); one seed alone is refused, since it has no interval."""
    import importlib.util

    from myna_training.ablation.statistics import aggregate

    spec = importlib.util.spec_from_file_location("redraw_results",
                                                  os.path.join(ROOT, "benchmarks/redraw_ablation_results.py"))
    redraw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(redraw)
    seeds = [os.path.join(ROOT, "docs/ablation", name) for name in ("results.json", "results-seed1.json")]
    runs = redraw.read_runs(seeds[0])[0] + redraw.read_runs(seeds[1])[0]
    points = aggregate(runs)
    assert len(points) == 10 and all(p["seeds"] == [0, 1] for p in points)
    key = points[0]["tasks"]["synthetic-key"]["weighted_score"]
    assert [round(v, 1) for v in key["values"]] == [44.9, 48.4]
    low, high = sorted(key["values"])
    assert key["mean"] == pytest.approx((low + high) / 2)
    assert key["half_width"] == pytest.approx(12.706 * (high - low) / 2, rel=1e-3)  # sd/sqrt(2) = |a-b|/2
    written = redraw.main([*seeds, "--output_dir", str(tmp_path)])
    assert {os.path.basename(p) for p in written} >= {"metric_vs_mask_ratio.png", "metric_vs_masking_policy.png"}
    with pytest.raises(SystemExit, match="one seed"):
        redraw.main([seeds[0], "--output_dir", str(tmp_path / "one")])
