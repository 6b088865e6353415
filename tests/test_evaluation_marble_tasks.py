"""MARBLE's clip-level tasks on miniature copies of each original layout and of MARBLE's layouts, built here.

Audio files are a few hundred samples (the loaders only list them); MTG-Jamendo gets mp3 paths without files
where the layout alone is checked, since missing audio is skipped at extraction, not at loading.
"""

import json
import os

import numpy as np
import pytest
import soundfile as sf

from myna_evaluation.task_families.marble import (
    MARBLE_TASKS,
    load_marble,
    marble_probe_grid,
    vocalset_split,
)
from myna_evaluation.tasks import DATA_DIR, DatasetLayoutError, column, load_task, read_lines


SPLITS = ("train", "validation", "test")
TONE = (0.1 * np.sin(np.arange(400) / 5)).astype(np.float32)


def write_wav(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, TONE, 16000)


# ------------------------------------------------------------------------------------------------ MTG-Jamendo


MTG_TRACKS = {  # split -> (track id, path, tags of every category)
    "train": [
        ("track_0000214", "14/214.mp3", ["genre---rock", "instrument---voice", "mood/theme---film"]),
        ("track_0000382", "82/382.mp3", ["genre---jazz", "instrument---piano", "mood/theme---calm"]),
    ],
    "validation": [("track_0001000", "00/1000.mp3", ["genre---pop", "instrument---guitar", "mood/theme---happy"])],
    "test": [("track_0002099", "99/2099.mp3", ["genre---90s", "instrument---pad", "mood/theme---trailer"])],
}
MTG_SUBSET_PREFIX = {"genre": "genre", "instrument": "instrument", "moodtheme": "mood/theme"}


def build_mtg(root, audio="audio"):
    split_dir = os.path.join(root, "data", "splits", "split-0")
    os.makedirs(split_dir)
    top50 = set(read_lines(os.path.join(DATA_DIR, "mtg_top50tags_tags.txt")))
    for subset in ("genre", "instrument", "moodtheme", "top50tags"):
        for split, tracks in MTG_TRACKS.items():
            with open(os.path.join(split_dir, f"autotagging_{subset}-{split}.tsv"), "w") as f:
                f.write("TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n")
                for track_id, path, tags in tracks:
                    if subset == "top50tags":
                        kept = [t for t in tags if t in top50]
                    else:
                        kept = [t for t in tags if t.startswith(MTG_SUBSET_PREFIX[subset] + "---")]
                    f.write("\t".join([track_id, "artist_1", "album_1", path, "200.0", *kept]) + "\n")
    for tracks in MTG_TRACKS.values():
        for _, path, _ in tracks:
            low = path.replace(".mp3", ".low.mp3") if audio == "audio-low" else path
            write_wav(os.path.join(root, audio, low))


@pytest.mark.parametrize(
    "task, size, first_train_tags",
    [
        ("mtg-genre", 87, ["genre---rock"]),
        ("mtg-instrument", 40, ["instrument---voice"]),
        ("mtg-moodtheme", 56, ["mood/theme---film"]),
        ("mtg-top50tags", 50, ["genre---rock", "instrument---voice", "mood/theme---film"]),
    ],
)
def test_mtg_jamendo_original_layout_split_0(tmp_path, task, size, first_train_tags):
    build_mtg(tmp_path)
    spec, dataset = load_task(task, str(tmp_path))
    assert spec.problem_type == "multi_label_classification" and len(spec.label_names) == size
    assert spec.metric == "myna_tagging" and spec.source.startswith("original:")
    assert column(dataset["train"], "id") == ["track_0000214", "track_0000382"]
    assert [len(dataset[s]) for s in SPLITS] == [2, 1, 1]
    label = column(dataset["train"], "label")[0]
    assert sorted(spec.label_names[i] for i, v in enumerate(label) if v) == sorted(first_train_tags)
    assert column(dataset["test"], "audio")[0] == str(tmp_path / "audio" / "99" / "2099.mp3")


def test_mtg_low_quality_audio_folder(tmp_path):
    build_mtg(tmp_path, audio="audio-low")
    _, dataset = load_task("mtg-genre", str(tmp_path))
    assert column(dataset["train"], "audio")[0] == str(tmp_path / "audio-low" / "14" / "214.low.mp3")


def test_mtg_tag_outside_the_vocabulary_names_file_and_line(tmp_path):
    build_mtg(tmp_path)
    with open(tmp_path / "data" / "splits" / "split-0" / "autotagging_genre-test.tsv", "a") as f:
        f.write("track_9\tartist_1\talbum_1\t00/9.mp3\t200.0\tgenre---polka\n")
    with pytest.raises(ValueError, match=r"autotagging_genre-test.tsv:3: tags \['genre---polka'\]"):
        load_task("mtg-genre", str(tmp_path))


def test_mtg_missing_split_files_are_listed(tmp_path):
    build_mtg(tmp_path)
    os.remove(tmp_path / "data" / "splits" / "split-0" / "autotagging_moodtheme-validation.tsv")
    with pytest.raises(DatasetLayoutError, match=r"(?s)Missing \(1\): data/splits/split-0/autotagging_moodtheme-"):
        load_task("mtg-moodtheme", str(tmp_path))


def test_mtg_without_a_folder_says_how_to_pass_one():
    with pytest.raises(ValueError, match=r"--dataset_paths mtg-genre=/data/mtg \(or mtg=\.\.\."):
        load_task("mtg-genre")


# ------------------------------------------------------------------------------------------------ NSynth


def build_nsynth(root):
    notes = {
        "train": [("keyboard_acoustic_004-060-025", 4, 60), ("bass_synthetic_009-052-050", 0, 52)],
        "valid": [("vocal_acoustic_000-070-127", 10, 70)],
        "test": [("guitar_electronic_021-021-100", 3, 21)],
    }
    for split, split_notes in notes.items():
        folder = os.path.join(root, f"nsynth-{split}")
        examples = {}
        for note, family, pitch in split_notes:
            write_wav(os.path.join(folder, "audio", f"{note}.wav"))
            examples[note] = {"note_str": note, "instrument_family": family, "pitch": pitch, "velocity": 25}
        with open(os.path.join(folder, "examples.json"), "w") as f:
            json.dump(examples, f)


def test_nsynth_instrument_family_and_pitch(tmp_path):
    build_nsynth(tmp_path)
    spec, dataset = load_task("nsynth-instrument", str(tmp_path))
    assert len(spec.label_names) == 11 and spec.metric == "myna_accuracy"
    assert column(dataset["train"], "id") == ["bass_synthetic_009-052-050", "keyboard_acoustic_004-060-025"]
    assert [spec.label_names[i] for i in column(dataset["train"], "label")] == ["bass", "keyboard"]
    assert [spec.label_names[i] for i in column(dataset["validation"], "label")] == ["vocal"]
    spec, dataset = load_task("nsynth-pitch", str(tmp_path))
    assert len(spec.label_names) == 128
    assert column(dataset["train"], "label") == [52, 60] and column(dataset["test"], "label") == [21]
    assert column(dataset["test"], "audio")[0].endswith("nsynth-test/audio/guitar_electronic_021-021-100.wav")


def test_nsynth_missing_archive_is_named(tmp_path):
    build_nsynth(tmp_path)
    os.remove(tmp_path / "nsynth-valid" / "examples.json")
    with pytest.raises(DatasetLayoutError, match=r"(?s)Missing \(1\): nsynth-valid/examples.json.*Found in"):
        load_task("nsynth-pitch", str(tmp_path))


# ------------------------------------------------------------------------------------------------ VocalSet


def build_vocalset(root):
    files = []
    for singer in ("f1", "f2", "m3", "m7"):
        for context, technique in (("arpeggios", "belt"), ("scales", "vibrato"), ("long_tones", "messa")):
            for vowel in "aeiou":
                files.append(f"FULL/{singer}/{context}/{technique}/{singer}_{context}_{technique}_{vowel}.wav")
    files.append("FULL/f2/scales/vibrato/f2_scales_vibrato_a(1).wav")  # a duplicate MARBLE drops
    files.append("FULL/f1/excerpts/lyrics/f1_excerpt.wav")  # not one of the 17 technique folders
    for relative in files:
        write_wav(os.path.join(root, relative))


def test_vocalset_original_layout(tmp_path):
    build_vocalset(tmp_path)
    spec, technique = load_task("vocalset-technique", str(tmp_path))
    assert len(spec.label_names) == 10
    ids = {s: column(technique[s], "id") for s in SPLITS}
    assert sum(len(v) for v in ids.values()) == 4 * 2 * 5  # belt and vibrato only; messa is not a task class
    assert {i.split("/")[0] for i in ids["test"]} == {"f2", "m3"}  # MARBLE's held-out singers
    assert not {i.split("/")[0] for i in ids["train"] + ids["validation"]} & {"f2", "m3"}
    assert all("(1)" not in i for split_ids in ids.values() for i in split_ids)
    assert {spec.label_names[i] for i in column(technique["train"], "label")} <= {"belt", "vibrato"}

    spec, singer = load_task("vocalset-singer", str(tmp_path))
    assert len(spec.label_names) == 20
    singer_ids = [i for s in SPLITS for i in column(singer[s], "id")]
    assert len(singer_ids) == len(set(singer_ids)) == 4 * 3 * 5  # every recording once, messa included
    for split in SPLITS:
        for track_id, label in zip(column(singer[split], "id"), column(singer[split], "label")):
            assert spec.label_names[label] == track_id.split("/")[0]
            assert vocalset_split("vocalset-singer", track_id, track_id.split("/")[0]) == split


def test_vocalset_marble_preprocessed_lists(tmp_path):
    lists = {"train": ["belt/f1_arpeggios_belt_a_00.wav"], "valid": ["vibrato/m11_scales_vibrato_e_01.wav"],
             "test": ["spoken/f9_spoken_00.wav"]}  # fmt: skip
    for split, lines in lists.items():
        for suffix in ("s", "t"):
            (tmp_path / f"{split}_{suffix}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            write_wav(str(tmp_path / "audio" / line))
    spec, dataset = load_task("vocalset-singer", str(tmp_path))
    assert spec.source.startswith("marble-lists:")
    assert [spec.label_names[column(dataset[s], "label")[0]] for s in SPLITS] == ["f1", "m11", "f9"]
    spec, dataset = load_task("vocalset-technique", str(tmp_path))
    assert [spec.label_names[column(dataset[s], "label")[0]] for s in SPLITS] == ["belt", "vibrato", "spoken"]
    assert column(dataset["train"], "audio")[0] == str(tmp_path / "audio" / "belt" / "f1_arpeggios_belt_a_00.wav")


def test_vocalset_empty_folder_lists_the_layouts(tmp_path):
    (tmp_path / "README.txt").write_text("nothing here")
    with pytest.raises(DatasetLayoutError, match=r"(?s)FULL/<singer>.*train_s.txt.*Found in .*README.txt"):
        load_task("vocalset-singer", str(tmp_path))


# ------------------------------------------------------------------------------------------------ MARBLE JSONL


MARBLE_JSONL = {
    "mtg-moodtheme": ("MTGMood", [["mood/theme---film"], ["mood/theme---calm", "mood/theme---sad"], []]),
    "nsynth-instrument": ("NSynthI", ["keyboard", 10, "bass"]),
    "nsynth-pitch": ("NSynthP", [60, 21, 108]),
    "vocalset-singer": ("VocalSetS", ["f3", "m11", "f9"]),
    "vocalset-technique": ("VocalSetT", ["belt", "trillo", "vocal_fry"]),
}


@pytest.mark.parametrize("task", list(MARBLE_JSONL))
def test_marble_jsonl_layout(tmp_path, task):
    prefix, labels = MARBLE_JSONL[task]
    folder = tmp_path / "data" / prefix
    folder.mkdir(parents=True)
    for split, label in zip(("train", "val", "test"), labels):
        audio_path = f"data/{prefix}/audio/{split}.wav"
        write_wav(str(tmp_path / audio_path))
        with open(folder / f"{prefix}.{split}.jsonl", "w") as f:
            f.write(json.dumps({"audio_path": audio_path, "label": label, "sample_rate": 16000}) + "\n")
    spec, dataset = load_marble(task, str(folder))
    assert spec.source.startswith("marble:")
    decoded = []
    for split in SPLITS:
        value = column(dataset[split], "label")[0]
        if spec.problem_type == "multi_label_classification":
            decoded.append([spec.label_names[i] for i, v in enumerate(value) if v])
        else:
            decoded.append(spec.label_names[value])
    if task == "nsynth-instrument":
        assert decoded == ["keyboard", "vocal", "bass"]  # integer labels are NSynth's family ids
    elif task == "nsynth-pitch":
        assert decoded == ["60", "21", "108"]
    elif task == "mtg-moodtheme":
        assert decoded == [["mood/theme---film"], ["mood/theme---calm", "mood/theme---sad"], []]
    else:
        assert decoded == labels


def test_every_marble_task_has_a_vocabulary_and_a_metric():
    from myna_evaluation.task_families.marble import marble_spec

    sizes = {s: len(marble_spec(s).label_names) for s in MARBLE_TASKS}
    assert sizes == {
        "mtg-genre": 87,
        "mtg-instrument": 40,
        "mtg-moodtheme": 56,
        "mtg-top50tags": 50,
        "nsynth-instrument": 11,
        "nsynth-pitch": 128,
        "vocalset-singer": 20,
        "vocalset-technique": 10,
    }
    for name in MARBLE_TASKS:
        spec = marble_spec(name)
        assert len(set(spec.label_names)) == len(spec.label_names)
        assert spec.metric == ("myna_tagging" if name.startswith("mtg") else "myna_accuracy")


def test_marble_probe_grid_is_marbles_search_space():
    grid = marble_probe_grid()
    assert [c.learning_rate for c in grid] == [1e-2, 5e-3, 1e-3, 5e-4, 1e-4]
    assert {(c.hidden_size, c.dropout, c.batch_size, c.l2, c.standardize) for c in grid} == {
        (512, 0.2, 64, 0.0, False)
    }
    assert len(marble_probe_grid(fast=True)) == 2
