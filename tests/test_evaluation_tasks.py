"""Task loaders on miniature copies of each original release layout and of the MARBLE layout, built here.

Audio files are tiny (a few hundred samples of a tone): the loaders only list and check them; MagnaTagATune,
GiantSteps and EmoMusic get real mp3 files (libsndfile writes mp3), GTZAN wav as released.
"""

import csv
import hashlib
import io
import json
import os

import numpy as np
import pytest
import soundfile as sf

from myna_evaluation.tasks import (
    DATA_DIR,
    GTZAN_GENRES,
    KEY_NAMES,
    DatasetLayoutError,
    column,
    load_paper_task,
    load_synthetic_task,
    load_task,
    normalize_key,
    read_lines,
)


TONE = (0.1 * np.sin(np.arange(400) / 5)).astype(np.float32)
TAGS = read_lines(os.path.join(DATA_DIR, "mtt_top50_tags.txt"))


ENCODED = {}


def write_audio(path):
    """Writes the tone in the format of `path`'s extension (encoded once per format, then copied)."""
    extension = os.path.splitext(path)[1][1:].upper()
    if extension not in ENCODED:
        buffer = io.BytesIO()
        sf.write(buffer, TONE, 16000, format=extension)
        ENCODED[extension] = buffer.getvalue()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(ENCODED[extension])


def column_values(dataset, name):
    return column(dataset, name)


# ------------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize(
    "text, expected",
    [
        ("C# minor", "Db minor"),
        ("a# major", "Bb major"),
        ("Eb:min", "Eb minor"),
        ("f maj", "F major"),
        ("B minor", "B minor"),
        ("Cb major", "B major"),
        ("E# minor", "F minor"),
        ("G♯ minor", "Ab minor"),
    ],
)
def test_normalize_key_gives_flat_mir_eval_names(text, expected):
    assert normalize_key(text) == expected
    assert expected in KEY_NAMES


def test_normalize_key_rejects_garbage():
    with pytest.raises(ValueError, match="cannot read 'H dorian' as a key"):
        normalize_key("H dorian")


def test_key_names_match_the_generated_corpus():
    from myna_training.synthetic import KEYS

    assert KEY_NAMES == list(KEYS)


# ------------------------------------------------------------------------------------------------ MagnaTagATune


def build_mtt(root):
    clips = [
        ("2", "0/a-track-0002.mp3", ["guitar", "rock"]),
        ("7", "b/b-track-0007.mp3", ["piano"]),
        ("35644", "0/corrupt-35644.mp3", ["guitar"]),
        ("100", "c/c-track-0100.mp3", ["choral", "no voice"]),
        ("200", "d/d-track-0200.mp3", []),
        ("300", "f/f-track-0300.mp3", ["techno", "not-a-top-tag"]),
    ]
    header = ["clip_id", *TAGS, "not-a-top-tag", "mp3_path"]
    with open(os.path.join(root, "annotations_final.csv"), "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        for clip_id, path, tags in clips:
            writer.writerow(
                [clip_id, *["1" if t in tags else "0" for t in TAGS], "1" if "not-a-top-tag" in tags else "0", path]
            )
            if clip_id != "35644":  # the corrupt clip's file may be absent: it is dropped before any check
                write_audio(os.path.join(root, path))


def test_mtt_original_layout(tmp_path):
    build_mtt(tmp_path)
    spec, dataset = load_paper_task("mtt", str(tmp_path))
    assert spec.problem_type == "multi_label_classification" and len(spec.label_names) == 50
    assert column_values(dataset["train"], "id") == ["00002", "00007"]  # 35644 dropped
    assert column_values(dataset["validation"], "id") == ["00100"]
    assert column_values(dataset["test"], "id") == ["00200", "00300"]
    first = column_values(dataset["train"], "label")[0]
    assert [TAGS[i] for i, v in enumerate(first) if v] == ["guitar", "rock"]
    assert sum(column_values(dataset["test"], "label")[1]) == 1  # tags outside the top 50 are not labels
    assert column_values(dataset["train"], "audio")[0].endswith("0/a-track-0002.mp3")


def test_mtt_missing_audio_lists_the_files_and_the_source(tmp_path):
    build_mtt(tmp_path)
    os.remove(tmp_path / "c" / "c-track-0100.mp3")
    with pytest.raises(
        DatasetLayoutError, match=r"(?s)Missing \(1\): c/c-track-0100.mp3.*Get it from the MagnaTagATune"
    ):
        load_paper_task("mtt", str(tmp_path))


def test_missing_annotation_file_says_what_is_expected(tmp_path):
    with pytest.raises(DatasetLayoutError, match="annotations_final.csv"):
        load_paper_task("mtt", str(tmp_path))


# ------------------------------------------------------------------------------------------------ GTZAN


def build_gtzan(root):
    for genre in GTZAN_GENRES:
        for number in range(100):
            write_audio(os.path.join(root, "genres", genre, f"{genre}.{number:05d}.wav"))


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gtzan")
    build_gtzan(root)
    return root


def test_gtzan_original_layout_uses_the_fault_filtered_split(gtzan_root):
    spec, dataset = load_paper_task("gtzan", str(gtzan_root))
    assert [len(dataset[s]) for s in ("train", "validation", "test")] == [443, 197, 290]
    train_ids = column_values(dataset["train"], "id")
    assert train_ids[0] == "blues.00029" and "rock.00099" in train_ids
    assert column_values(dataset["validation"], "id")[0] == "blues.00000"
    assert column_values(dataset["train"], "label")[-1] == GTZAN_GENRES.index("rock")
    assert spec.label_names[column_values(dataset["test"], "label")[0]] == "blues"


def test_gtzan_incomplete_folder_lists_missing_tracks(gtzan_root):
    track = gtzan_root / "genres" / "jazz" / "jazz.00054.wav"
    os.rename(track, str(track) + ".bak")
    try:
        with pytest.raises(DatasetLayoutError, match="jazz/jazz.00054.wav"):
            load_paper_task("gtzan", str(gtzan_root))
    finally:
        os.rename(str(track) + ".bak", track)


# ------------------------------------------------------------------------------------------------ GiantSteps


def artist_is_valid(name):
    return int(hashlib.sha1(name.lower().encode()).hexdigest(), 16) % 116 >= 100


def build_giantsteps(root):
    names = [f"Artist {i}" for i in range(300)]
    valid_artist = next(n for n in names if artist_is_valid(n))
    train_artists = [n for n in names if not artist_is_valid(n)][:3]
    key_dir = os.path.join(root, "giantsteps-key-dataset-c8cb8aa")
    for track_id, key in (("10", "F# minor"), ("11", "Eb major")):
        os.makedirs(os.path.join(key_dir, "annotations", "key"), exist_ok=True)
        with open(os.path.join(key_dir, "annotations", "key", f"{track_id}.LOFI.key"), "w") as f:
            f.write(key)
        write_audio(os.path.join(key_dir, "audio", f"{track_id}.LOFI.mp3"))
    mtg_dir = os.path.join(root, "giantsteps-mtg-key-dataset-fd7b8c5")
    os.makedirs(os.path.join(mtg_dir, "annotations"))
    tracks = [  # id, manual key, confidence, artists
        ("1", "C# minor", "2", train_artists[0]),
        ("2", "A major", "2", f"{train_artists[1]}, {valid_artist}"),  # collaborator of a valid artist: valid
        ("3", "d minor", "2", train_artists[1]),  # that collaborator's own track: valid too
        ("4", "G major / E minor", "2", train_artists[2]),  # two keys: dropped
        ("5", "B minor", "1", train_artists[2]),  # low confidence: dropped
        ("6", "Bb major", "2", train_artists[2]),
    ]
    with open(os.path.join(mtg_dir, "annotations", "annotations.txt"), "w") as f:
        f.write("ID\tMANUAL KEY\tC\tGENRE\n")
        for track_id, key, confidence, _ in tracks:
            f.write(f"{track_id}\t{key}\t{confidence}\tTechno\n")
    with open(os.path.join(mtg_dir, "annotations", "beatport_metadata.txt"), "w") as f:
        f.write("ID\tARTIST\tTITLE\n")
        for track_id, _, _, artists in tracks:
            f.write(f"{track_id}\t{artists}\tsong {track_id}\n")
    for track_id, *_ in tracks:
        write_audio(os.path.join(mtg_dir, "audio", f"{track_id}.LOFI.mp3"))


def test_giantsteps_original_layout(tmp_path):
    build_giantsteps(tmp_path)
    spec, dataset = load_paper_task("giantsteps", str(tmp_path))
    assert spec.metric == "myna_key" and spec.label_names == tuple(KEY_NAMES)
    assert column_values(dataset["train"], "id") == ["1", "6"]
    assert column_values(dataset["validation"], "id") == ["2", "3"]
    assert column_values(dataset["test"], "id") == ["10", "11"]
    assert [KEY_NAMES[i] for i in column_values(dataset["train"], "label")] == ["Db minor", "Bb major"]
    assert [KEY_NAMES[i] for i in column_values(dataset["test"], "label")] == ["Gb minor", "Eb major"]


def test_giantsteps_needs_both_releases(tmp_path):
    build_giantsteps(tmp_path)
    os.rename(tmp_path / "giantsteps-mtg-key-dataset-fd7b8c5", tmp_path / "elsewhere")
    with pytest.raises(DatasetLayoutError, match="giantsteps-mtg-key-dataset"):
        load_paper_task("gs", str(tmp_path))


# ------------------------------------------------------------------------------------------------ EmoMusic


def emo_is_valid(artist):
    cleaned = " ".join("".join(c for c in artist.lower() if c.isalpha() or c.isspace()).split())
    return int(hashlib.sha1(cleaned.encode()).hexdigest(), 16) % 10 >= 8


def build_emomusic(root):
    artists = [f"Band {chr(65 + i)}" for i in range(26)]
    valid = next(a for a in artists if emo_is_valid(a))
    train = [a for a in artists if not emo_is_valid(a)][:3]
    songs = [
        (2, train[0], "development", 3.0, 4.0),
        (3, train[1], "development", 5.0, 2.0),
        (4, train[2], "development", 7.0, 6.0),
        (5, valid, "development", 1.0, 8.0),
        (6, train[0], "evaluation", 9.0, 1.0),
    ]
    os.makedirs(root / "annotations")
    with open(root / "annotations" / "songs_info.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "song_id",
                "file_name",
                "Artist",
                "Song title",
                "start of the segment (min.sec)",
                "end of the segment (min.sec)",
                "Genre",
                "Mediaeval 2013 set",
            ]
        )
        for song_id, artist, subset, *_ in songs:
            writer.writerow([song_id, f"{song_id}.mp3", artist, f"Song {song_id}", "0.30", "1.15", "Rock", subset])
        # A song without static annotations (withdrawn duplicate): not part of the dataset.
        writer.writerow([7, "7.mp3", train[1], "Song 7", "0.30", "1.15", "Rock", "development"])
    with open(root / "annotations" / "static_annotations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["song_id", "mean_arousal", "std_arousal", "mean_valence", "std_valence"])
        for song_id, _, _, arousal, valence in songs:
            writer.writerow([song_id, arousal, 1.0, valence, 1.0])
    for song_id, *_ in songs:
        write_audio(str(root / "clips_45seconds" / f"{song_id}.mp3"))
    return songs


def test_emomusic_original_layout_zscores_with_development_statistics(tmp_path):
    songs = build_emomusic(tmp_path)
    spec, dataset = load_paper_task("emo", str(tmp_path))
    assert spec.label_names == ("arousal", "valence")
    assert column_values(dataset["train"], "id") == ["2", "3", "4"]
    assert column_values(dataset["validation"], "id") == ["5"]
    assert column_values(dataset["test"], "id") == ["6"]
    development = np.array([s[3:] for s in songs[:4]])
    mean, std = development.mean(0), development.std(0)
    assert np.allclose(column_values(dataset["test"], "label")[0], (np.array([9.0, 1.0]) - mean) / std, atol=1e-5)
    dev_labels = np.array(column_values(dataset["train"], "label") + column_values(dataset["validation"], "label"))
    assert np.allclose(dev_labels.mean(0), 0, atol=1e-6) and np.allclose(dev_labels.std(0), 1, atol=1e-5)


# ---------------------------------------------------------------------------------------- MARBLE, split files, Hub


MARBLE_LABELS = {
    "GTZAN": ("gtzan", ["blues", "rock", "jazz"], lambda spec, v: spec.label_names[v]),
    "GS": ("giantsteps", ["C# minor", "A major", "eb minor"], lambda spec, v: spec.label_names[v]),
    "MTT": (
        "mtt",
        [["guitar", "rock"], ["piano"], []],
        lambda spec, v: [spec.label_names[i] for i, x in enumerate(v) if x],
    ),
    "EMO": ("emomusic", [[0.5, -0.2], [0.1, 0.3], [-0.6, -0.1]], lambda spec, v: v),
}


@pytest.mark.parametrize("marble_name", list(MARBLE_LABELS))
def test_marble_layout(tmp_path, marble_name):
    task, labels, decode = MARBLE_LABELS[marble_name]
    folder = tmp_path / "data" / marble_name
    folder.mkdir(parents=True)
    for split, label in zip(("train", "val", "test"), labels):
        # MARBLE writes audio paths relative to its repository root.
        audio_path = f"data/{marble_name}/audio/{split}.wav"
        write_audio(str(tmp_path / audio_path))
        with open(folder / f"{marble_name}.{split}.jsonl", "w") as f:
            f.write(json.dumps({"audio_path": audio_path, "label": label, "duration": 0.025}) + "\n")
    spec, dataset = load_paper_task(task, str(folder))
    assert spec.source.startswith("marble:")
    assert column_values(dataset["validation"], "audio") == [
        str(tmp_path / "data" / marble_name / "audio" / "val.wav")
    ]
    decoded = [decode(spec, column_values(dataset[s], "label")[0]) for s in ("train", "validation", "test")]
    if task == "giantsteps":
        assert decoded == ["Db minor", "A major", "Eb minor"]
    elif task == "emomusic":
        development = np.array(labels[:2])
        expected = (np.array(labels[2]) - development.mean(0)) / development.std(0)
        assert np.allclose(decoded[2], expected, atol=1e-5)
    else:
        assert decoded == labels


def test_marble_layout_rejects_unknown_labels(tmp_path):
    for split in ("train", "val", "test"):
        write_audio(str(tmp_path / f"{split}.wav"))
        with open(tmp_path / f"GTZAN.{split}.jsonl", "w") as f:
            f.write(json.dumps({"audio_path": f"{split}.wav", "label": "polka"}) + "\n")
    with pytest.raises(ValueError, match=r"GTZAN.train.jsonl:1: label 'polka' is not one of"):
        load_paper_task("gtzan", str(tmp_path))


def test_user_split_file_replaces_the_split(tmp_path):
    build_emomusic(tmp_path)
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["2", "3", "5"], "valid": ["4"], "test": ["6"]}))
    _, dataset = load_paper_task("emomusic", str(tmp_path), split_file=str(split_file))
    assert column_values(dataset["validation"], "id") == ["4"]
    with pytest.raises(FileNotFoundError, match="split file .* does not exist"):
        load_paper_task("emomusic", str(tmp_path), split_file=str(tmp_path / "absent.json"))


def test_hub_id_fails_offline_with_a_clear_message():
    with pytest.raises(ConnectionError, match=r"(?s)could not load the Hub dataset 'marsyas/gtzan'.*pass its folder"):
        load_paper_task("gtzan", "marsyas/gtzan")


def test_paper_task_without_data_says_how_to_pass_it():
    with pytest.raises(ValueError, match=r"--dataset_paths gtzan="):
        load_task("gtzan")


def test_a_mistyped_task_name_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown task 'synthetic-kye'. Did you mean 'synthetic-key'\? Choose one"):
        load_task("synthetic-kye")
    with pytest.raises(ValueError, match=r"unknown task 'gtzn'. Did you mean 'gtzan'\?"):
        load_paper_task("gtzn", "/nowhere")


def test_synthetic_tasks_share_clips_and_carry_their_labels(tmp_path):
    from myna_evaluation.tasks import synthetic_splits

    corpus = synthetic_splits((6, 3, 3), duration=1.0, cache_dir=str(tmp_path))
    ids = {}
    for name in ("synthetic-key", "synthetic-tempo", "synthetic-tags", "synthetic-style"):
        spec, dataset = load_synthetic_task(name, (6, 3, 3), 1.0, corpus=corpus)
        assert [len(dataset[s]) for s in ("train", "validation", "test")] == [6, 3, 3]
        ids[name] = column_values(dataset["test"], "id")
        labels = column_values(dataset["train"], "label")
        if name == "synthetic-key":
            assert [spec.label_names[i] for i in labels] == [
                corpus["train"].features["key"].int2str(k) for k in column(corpus["train"], "key")
            ]
        if name == "synthetic-tags":
            assert [sorted(i for i, v in enumerate(row) if v) for row in labels] == [
                sorted(r) for r in column(corpus["train"], "instruments")
            ]
        if name == "synthetic-tempo":
            development = np.array(column(corpus["train"], "tempo") + column(corpus["validation"], "tempo"))
            assert np.allclose(
                np.array(labels)[:, 0],
                (np.array(column(corpus["train"], "tempo")) - development.mean()) / development.std(),
                atol=1e-4,
            )
    assert len({tuple(v) for v in ids.values()}) == 1
    assert not set(column(corpus["train"], "id")) & set(column(corpus["test"], "id"))
