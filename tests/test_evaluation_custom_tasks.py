"""Custom task files on generated audio: the three problem types with the three split styles, audio folders,
group-aware splitting, and errors that name what is missing."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile as sf
import yaml

from myna_evaluation.task_families.custom import TaskFileError, group_split, load_custom_task
from myna_evaluation.tasks import column, load_task


SPLIT_NAMES = ("train", "validation", "test")


def write_tone(path, frequency=440.0, seconds=0.05):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    sf.write(path, (0.1 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 16000)


def clip_rows(root, count=24):
    """Rows of a generated labelled set: 8 artists of 3 clips, a genre, tags and two targets per clip."""
    rows = []
    for index in range(count):
        artist = f"artist{index // 3}"
        file_name = f"audio/{artist}/clip{index:02d}.wav"
        write_tone(os.path.join(root, file_name), 200 + 20 * index)
        rows.append(
            {
                "file": file_name,
                "artist": artist,
                "split": SPLIT_NAMES[0 if index < 16 else 1 if index < 20 else 2],
                "genre": ("jazz", "rock", "folk")[index % 3],
                "tags": ";".join(t for t, on in (("piano", index % 2), ("voice", index % 3 == 0)) if on),
                "arousal": float(index),
                "valence": float(index % 5),
            }
        )
    return rows


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_task(task_file, **values):
    with open(task_file, "w") as f:
        yaml.safe_dump(values, f)
    return str(task_file)


LABELS = {
    "single_label": {"label_column": "genre"},
    "multi_label": {"label_column": "tags", "label_delimiter": ";"},
    "regression": {"label_columns": ["arousal", "valence"]},
}


@pytest.mark.parametrize("split_style", ["column", "files", "group"])
@pytest.mark.parametrize("problem_type", list(LABELS))
def test_every_problem_type_with_every_split_style(tmp_path, problem_type, split_style):
    rows = clip_rows(tmp_path)
    if split_style == "files":
        for split in SPLIT_NAMES:
            write_csv(tmp_path / f"{split}.csv", [r for r in rows if r["split"] == split])
        task = dict(path="train.csv", splits={"files": {s: f"{s}.csv" for s in SPLIT_NAMES}})
    else:
        write_csv(tmp_path / "labels.csv", rows)
        splits = {"column": "split"} if split_style == "column" else {"group_column": "artist", "seed": 3}
        task = dict(path="labels.csv", splits=splits)
    path = write_task(
        tmp_path / "my_task.yaml", audio_column="file", problem_type=problem_type, **task, **LABELS[problem_type]
    )
    spec, dataset = load_custom_task(path)

    assert spec.name == "my_task" and spec.problem_type.startswith(problem_type.split("_")[0])
    by_id = {}
    for split in SPLIT_NAMES:
        for track_id, audio, label in zip(*(column(dataset[split], c) for c in ("id", "audio", "label"))):
            assert os.path.isfile(audio) and track_id == audio
            by_id[os.path.relpath(audio, tmp_path)] = (split, label)
    assert sorted(by_id) == sorted(r["file"] for r in rows)
    if split_style != "group":
        assert all(by_id[r["file"]][0] == r["split"] for r in rows)
    else:
        artist_splits = {}
        for r in rows:
            artist_splits.setdefault(r["artist"], set()).add(by_id[r["file"]][0])
        assert all(len(s) == 1 for s in artist_splits.values())
        assert all(len(dataset[s]) > 0 for s in SPLIT_NAMES)

    clip = rows[3]  # jazz, piano, voice, arousal 3, valence 3
    label = by_id[clip["file"]][1]
    if problem_type == "single_label":
        assert spec.label_names == ("folk", "jazz", "rock") and spec.label_names[label] == "jazz"
        assert spec.metric == "myna_accuracy" and spec.columns == (("my_task", "accuracy"),)
    elif problem_type == "multi_label":
        assert spec.label_names == ("piano", "voice") and label == [1.0, 1.0]
        assert spec.metric == "myna_tagging"
    else:
        train = [r for r in rows if by_id[r["file"]][0] == "train"]
        targets = np.array([[r["arousal"], r["valence"]] for r in train])
        expected = (np.array([3.0, 3.0]) - targets.mean(0)) / targets.std(0)
        assert np.allclose(label, expected, atol=1e-5)
        z = np.array(column(dataset["train"], "label"))
        assert np.allclose(z.mean(0), 0, atol=1e-5) and np.allclose(z.std(0), 1, atol=1e-4)  # z-scored on train
        assert spec.label_names == ("arousal", "valence") and spec.primary == "r2_mean"


@pytest.mark.parametrize("seed", range(20))
def test_group_split_never_puts_a_group_in_two_splits(seed):
    rng = np.random.default_rng(seed)
    groups = [f"g{g}" for g in rng.integers(0, rng.integers(3, 40), size=rng.integers(10, 300))]
    membership = group_split(groups, (0.7, 0.15, 0.15), seed=seed)
    assert set(membership) == set(groups) and set(membership.values()) == set(SPLIT_NAMES)
    rows = {s: [g for g in groups if membership[g] == s] for s in SPLIT_NAMES}
    for a in SPLIT_NAMES:
        for b in SPLIT_NAMES:
            if a != b:
                assert not set(rows[a]) & set(rows[b])
    assert membership == group_split(groups, (0.7, 0.15, 0.15), seed=seed)  # seeded


def test_group_split_follows_the_fractions_on_many_groups():
    groups = [f"g{i // 2}" for i in range(2000)]
    membership = group_split(groups, (0.8, 0.1, 0.1), seed=0)
    counts = [sum(membership[g] == s for g in groups) for s in SPLIT_NAMES]
    assert abs(counts[0] - 1600) <= 2 and abs(counts[1] - 200) <= 2 and abs(counts[2] - 200) <= 2


def test_group_split_needs_three_groups():
    with pytest.raises(TaskFileError, match=r"at least 3 groups.*found 2"):
        group_split(["a", "b", "a"])


def test_audiofolder_with_class_and_split_folders(tmp_path):
    for split, count in (("train", 4), ("validation", 2), ("test", 2)):
        for label in ("calm", "loud"):
            for i in range(count):
                write_tone(str(tmp_path / "set" / split / label / f"{label}{i}.wav"))
    spec, dataset = load_task(f"custom:{tmp_path / 'set'}")
    assert spec.name == "set" and spec.label_names == ("calm", "loud")
    assert [len(dataset[s]) for s in SPLIT_NAMES] == [8, 4, 4]
    assert column(dataset["test"], "label") == [0, 0, 1, 1]


def test_audiofolder_of_class_folders_is_split_by_file_with_a_seed(tmp_path):
    for label in ("a", "b", "c"):
        for i in range(10):
            write_tone(str(tmp_path / label / f"{i}.wav"))
    _, first = load_custom_task(str(tmp_path))
    _, again = load_custom_task(str(tmp_path))
    assert [len(first[s]) for s in SPLIT_NAMES] == [24, 3, 3]
    assert column(first["test"], "id") == column(again["test"], "id")


def test_audiofolder_metadata_jsonl_with_list_labels(tmp_path):
    records = []
    for i in range(9):
        write_tone(str(tmp_path / "clips" / f"{i}.wav"))
        records.append({"file_name": f"{i}.wav", "tags": ["x", "y"][: 1 + i % 2], "part": SPLIT_NAMES[i % 3]})
    with open(tmp_path / "clips" / "metadata.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    path = write_task(
        tmp_path / "t.yaml", path="clips", label_column="tags", problem_type="multi-label", splits={"column": "part"}
    )
    spec, dataset = load_custom_task(path)
    assert spec.label_names == ("x", "y")
    assert column(dataset["validation"], "label")[0] == [1.0, 1.0]  # clip 1


def test_missing_label_column_is_named_with_the_columns_found(tmp_path):
    write_csv(tmp_path / "labels.csv", clip_rows(tmp_path, 6))
    path = write_task(tmp_path / "t.yaml", path="labels.csv", audio_column="file", label_column="mood")
    with pytest.raises(
        TaskFileError, match=r"column \['mood'\] not in .*labels.csv; found columns: .*arousal, artist"
    ):
        load_custom_task(path)


def test_missing_table_lists_the_folder(tmp_path):
    write_csv(tmp_path / "labels.csv", clip_rows(tmp_path, 6))
    path = write_task(tmp_path / "t.yaml", path="label.csv")
    with pytest.raises(
        TaskFileError, match=r"table .*/label.csv does not exist \(found in .*: audio, labels.csv, t.yaml\)"
    ):
        load_custom_task(path)


def test_task_file_errors_are_specific(tmp_path):
    write_csv(tmp_path / "labels.csv", clip_rows(tmp_path, 6))
    with pytest.raises(TaskFileError, match=r"unknown keys \['label'\]"):
        load_custom_task(write_task(tmp_path / "a.yaml", path="labels.csv", label="genre"))
    with pytest.raises(TaskFileError, match=r"metric 'myna_r2' does not score a single_label"):
        load_custom_task(write_task(tmp_path / "b.yaml", path="labels.csv", label_column="genre", metrics=["myna_r2"]))
    with pytest.raises(TaskFileError, match=r"no metric module 'f1'.*available: \['myna_accuracy'"):
        load_custom_task(write_task(tmp_path / "c.yaml", path="labels.csv", label_column="genre", metrics=["f1"]))
    with pytest.raises(TaskFileError, match=r"set label_delimiter"):
        rows = clip_rows(tmp_path, 6)
        for r in rows:
            r["tags"] = "piano,voice"
        write_csv(tmp_path / "commas.csv", rows)
        load_custom_task(
            write_task(tmp_path / "d.yaml", path="commas.csv", label_column="tags", problem_type="multi_label")
        )
    with pytest.raises(TaskFileError, match=r"split 'holdout' in column 'artist'"):
        rows = clip_rows(tmp_path, 6)
        rows[0]["artist"] = "holdout"
        write_csv(tmp_path / "split.csv", rows)
        load_custom_task(
            write_task(tmp_path / "e.yaml", path="split.csv", label_column="genre", splits={"column": "artist"})
        )
    with pytest.raises(TaskFileError, match=r"task file .*absent.yaml does not exist"):
        load_custom_task(str(tmp_path / "absent.yaml"))


def test_extra_metrics_are_reported_beside_the_first(tmp_path):
    from myna_evaluation.scoring import compute_metrics

    write_csv(tmp_path / "labels.csv", clip_rows(tmp_path, 6))
    spec, _ = load_custom_task(
        write_task(
            tmp_path / "t.yaml", path="labels.csv", label_column="genre", metrics=["myna_accuracy", "myna_accuracy"]
        )
    )
    assert spec.extra_metrics == ("myna_accuracy",)
    outputs = np.eye(3)[[0, 1, 2, 0]]
    assert compute_metrics(spec, outputs, np.array([0, 1, 2, 1])) == {"accuracy": 0.75}


def test_hub_source_fails_offline_with_a_clear_message(tmp_path):
    path = write_task(tmp_path / "t.yaml", path="someone/my-dataset", source="hub", label_column="label")
    with pytest.raises(
        ConnectionError, match=r"could not load the Hub dataset 'someone/my-dataset'.*source: audiofolder"
    ):
        load_custom_task(path)
