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
    written = plot_policies(str(tmp_path), seed=0)  # what the README's command draws (its --seed defaults to 0)
    assert sorted(os.path.basename(p) for p in written) == committed
    for path in written:
        with open(path, "rb") as new, open(os.path.join(MASKING, os.path.basename(path)), "rb") as old:
            assert new.read() == old.read(), f"{os.path.basename(path)} differs from docs/masking: regenerate it"
