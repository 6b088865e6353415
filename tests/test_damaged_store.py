"""A damaged store or index answers in one line naming the file and the fix: a corrupt Parquet shard (myna embed
and myna index; `--repair` sets it aside and embeds its files again), a corrupt index.faiss, index.json or
paths.json."""

import os

import pytest

pytest.importorskip("faiss")

from myna_pipelines.cli import main as myna  # noqa: E402
from myna_pipelines.search import MynaIndex  # noqa: E402
from myna_pipelines.store import EmbeddingStore  # noqa: E402

from .pipelines_support import save_tiny_model, write_audio  # noqa: E402


def damage(path: str) -> None:
    data = bytearray(open(path, "rb").read())
    data[8 : len(data) - 8] = b"\x07" * (len(data) - 16)  # the magic bytes stay: a plausible, unreadable file
    open(path, "wb").write(bytes(data))


def test_a_damaged_shard_is_named_and_repaired(tmp_path, capsys):
    model = save_tiny_model(tmp_path / "model", variant="base")
    music = tmp_path / "music"
    music.mkdir()
    for i in range(2):
        write_audio(music / f"song{i}.wav", 4.0, sampling_rate=16_000, seed=i)
    store = str(tmp_path / "store")
    embed = ["embed", str(music), "--model", model, "--output", store, "--num_workers", "0"]
    assert myna(embed) == 0
    (shard,) = EmbeddingStore(store).shard_files()
    damage(shard)
    capsys.readouterr()

    for command in (embed, ["index", store, "--output", str(tmp_path / "index")]):
        assert myna(command) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"shard {shard} is damaged" in err[0], err
        assert "--repair" in err[0] and "--overwrite" in err[0]

    assert myna(embed + ["--repair"]) == 0
    captured = capsys.readouterr()
    assert "embedded 2 files" in captured.out and "set " + shard + " aside" in captured.err
    assert os.path.exists(os.path.join(store, ".myna", "damaged", os.path.basename(shard)))
    assert len(EmbeddingStore(store).file_states()) == 2

    index = tmp_path / "index"
    assert myna(["index", store, "--output", str(index)]) == 0
    for name, content in (("index.faiss", b"not faiss"), ("index.json", b"{broken"), ("paths.json", b"[1, 2")):
        saved = (index / name).read_bytes()
        (index / name).write_bytes(content)
        source = "STORE" if name == "index.json" else store  # a broken index.json no longer names its store
        with pytest.raises(ValueError, match=rf"{index / name} is damaged .* `myna index {source} --output {index} "
                                             "--overwrite`"):
            MynaIndex.load(str(index))
        (index / name).write_bytes(saved)
    assert MynaIndex.load(str(index)).info["count"] == 2
