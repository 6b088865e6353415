"""The development benchmark builder on tiny generated inputs: key labels and transposition, programs, splits by
work, the soundtrack filters (jingles, silence, duplicates, loops), the manifest and resume, task files that the
custom task family loads, and one FluidSynth render when FluidSynth is installed."""

import csv
import importlib.util
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
import soundfile as sf


pytest.importorskip("librosa")
mido = pytest.importorskip("mido")
pytest.importorskip("music21")

from myna_common.atomic import temporary_name  # noqa: E402
from myna_evaluation.dev_benchmark import (  # noqa: E402
    build,
    scores,
    soundtracks,
    system_tools,
    tasks_rerender,
    tasks_stage,
)
from myna_evaluation.tasks import KEY_NAMES, SPLITS, column  # noqa: E402


SR = 16_000
SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "build_dev_benchmark.py"
)


D_PATTERN = [(0, 2, 62), (2, 1, 66), (3, 1, 69), (4, 1, 67), (5, 1, 64), (6, 1, 61), (7, 1, 62)]


def scale_piece(piece_id="bach/bwv1.1", collection="bach", group="bach/bwv1", signature=2, mode="major", parts=2):
    """A piece in D major (an 8-quarter figure around the tonic triad, two parts an octave apart), 32 quarters long."""
    melody = [(float(8 * bar + o), float(d), p) for bar in range(4) for o, d, p in D_PATTERN]
    voices = [melody] + [[(o, d, p - 12) for o, d, p in melody]] * (parts - 1)
    return scores.ScorePiece(piece_id, collection, group, "", voices, 32.0, signature, mode)


# ---------------------------------------------------------------------------------------------- keys and plans


def test_key_estimate_and_signatures():
    histogram = np.zeros(12)
    histogram[[0, 2, 4, 5, 7, 9, 11]] = [4, 1, 2, 1, 3, 1, 1]
    assert scores.estimate_key(histogram)[:2] == (0, "major")
    assert scores.estimate_key(np.roll(histogram, 7))[:2] == (7, "major")
    assert [scores.signature_sharps(*k) for k in ((7, "major"), (4, "minor"), (5, "major"), (2, "minor"))] == [
        1,
        1,
        -1,
        -1,
    ]
    assert scores.signature_sharps(6, "major") == -6 and scores.signature_sharps(6, "minor") == 3
    assert all(scores.key_name(t, m) in KEY_NAMES for t in range(24) for m in ("major", "minor"))


def test_plans_transpose_the_key_with_the_audio_and_balance_tonics():
    settings = scores.PlanSettings(clip_seconds=8.0, seed=3)
    piece = scale_piece()
    plans = scores.plan_clips(piece, 48, settings, tonal=True)
    assert plans == scores.plan_clips(piece, 48, settings, tonal=True)  # seeded: a rebuild plans the same clips
    for plan in plans:
        assert plan.key == scores.key_name(2 + plan.transpose, "major") and -6 <= plan.transpose <= 5
        assert 60 <= plan.tempo <= 160
    assert len({p.key for p in plans}) >= 10  # 48 draws over 12 tonics
    notes = scores.clip_notes(piece, plans[0])
    assert notes[0][0][2] == 62 + plans[0].transpose


def test_keys_are_left_out_when_modal_atonal_or_against_the_signature():
    settings = scores.PlanSettings(clip_seconds=8.0)
    assert all(p.key is None for p in scores.plan_clips(scale_piece(mode="dorian"), 4, settings, tonal=True))
    assert all(p.key is None for p in scores.plan_clips(scale_piece(), 4, settings, tonal=False))
    assert all(p.key is None for p in scores.plan_clips(scale_piece(signature=-3), 4, settings, tonal=True))


def test_programs_families_and_the_bass_on_the_lowest_part():
    parts = [[(0.0, 1.0, 72)], [(0.0, 1.0, 40)], [(0.0, 1.0, 60)]]
    rng = np.random.default_rng(0)
    for _ in range(200):
        programs = scores.choose_programs(rng, parts, max_families=3)
        families = [scores.family_of(p) for p in programs]
        assert 1 <= len(set(families)) <= 3
        assert all(f != "bass" for i, f in enumerate(families) if i != 1)
    alone = [scores.choose_programs(np.random.default_rng(seed), parts[:1], 3) for seed in range(50)]
    assert all(len(p) == 1 and scores.family_of(p[0]) != "bass" for p in alone)
    assert scores.family_of(0) == "piano" and scores.family_of(73) == "pipe"
    with pytest.raises(ValueError, match="GM program 120"):
        scores.family_of(120)


def test_a_short_piece_repeats_to_fill_the_clip():
    piece = scores.ScorePiece("x/y", "x", "x/y", "", [[(0.0, 1.0, 60), (1.0, 1.0, 62)]], 2.0)
    plan = scores.plan_clips(piece, 1, scores.PlanSettings(clip_seconds=3.0, tempo_range=(60, 60)), tonal=False)[0]
    notes = scores.clip_notes(piece, plan)[0]
    assert [n[0] for n in notes] == [0.0, 1.0, 2.0]  # seconds at 60 quarter notes per minute
    assert [n[2] - plan.transpose for n in notes] == [60, 62, 60]


def test_work_groups():
    assert scores.work_group("beethoven", "beethoven/opus18no1/movement2") == "beethoven/opus18no1"
    assert scores.work_group("bach", "bach/bwv66.6") == "bach/bwv66"
    assert scores.work_group("essenFolksong", "essenFolksong/altdeu10#3", "Herzog Ernst!") == (
        "essenFolksong/herzog-ernst"
    )
    assert scores.work_group("palestrina", "palestrina/Agnus_01") == "palestrina/Agnus_01"


def test_splits_by_work_never_leak_and_cover_every_class():
    rng = np.random.default_rng(0)
    plans = []
    for collection in ("a", "b", "c"):
        for work in range(int(rng.integers(4, 15))):
            for clip in range(int(rng.integers(1, 6))):
                plans.append(
                    scores.ClipPlan(
                        f"{collection}{work}@{clip}",
                        f"{collection}/{work}",
                        collection,
                        f"{collection}/w{work}",
                        0.0,
                        100.0,
                        0,
                        [0],
                        ["piano"],
                        None,
                        0.0,
                        4.0,
                    )
                )
    membership = build.assign_splits(plans, (0.7, 0.15, 0.15), seed=0)
    assert membership == build.assign_splits(plans, (0.7, 0.15, 0.15), seed=0)
    for collection in ("a", "b", "c"):
        assert {membership[p.group] for p in plans if p.collection == collection} == set(SPLITS)
    pieces = {}
    for plan in plans:
        pieces.setdefault(plan.piece_id, set()).add(membership[plan.group])
    assert all(len(s) == 1 for s in pieces.values())


def test_scores_of_the_same_file_name_are_parsed_and_cached_apart(tmp_path, monkeypatch):
    paths = [
        "/lib/music21/corpus/beethoven/opus18no1/movement2.mxl",
        "/lib/music21/corpus/beethoven/opus59no2/movement2.mxl",
    ]
    stems = ["beethoven/opus18no1/movement2", "beethoven/opus59no2/movement2"]
    monkeypatch.setattr(scores, "corpus_collections", lambda: ["beethoven"])
    monkeypatch.setattr(scores, "corpus_files", lambda collections: {"beethoven": list(paths)})
    read = lambda path, collection: [scale_piece(stems[paths.index(path)], collection, stems[paths.index(path)][:-10])]
    monkeypatch.setattr(scores, "read_pieces", read)
    args = build.BuildArguments(collections="beethoven", pieces_per_class=2, workers=1, progress=False)
    for _ in range(2):  # parsed, then read back from the cache
        chosen, failures = tasks_stage.select_pieces(args, str(tmp_path))
        assert sorted(p.piece_id for p in chosen["beethoven"]) == stems and not failures
    assert len({tasks_stage.score_cache(str(tmp_path), p) for p in paths}) == 2


def test_task_files_load_in_the_custom_family(tmp_path):
    from myna_evaluation.task_families.custom import load_custom_task

    settings = scores.PlanSettings(clip_seconds=8.0)
    plans = []
    for collection in ("bach", "mozart"):
        for work in range(4):
            piece = scale_piece(f"{collection}/w{work}.1", collection, f"{collection}/w{work}")
            plans += scores.plan_clips(piece, 2, settings, tonal=True)
    membership = build.assign_splits(plans, (0.5, 0.25, 0.25), seed=0)
    rows = build.clip_rows(plans, membership)
    for row in rows:
        os.makedirs(os.path.dirname(tmp_path / row["file"]), exist_ok=True)
        sf.write(tmp_path / row["file"], np.zeros(SR // 10, np.float32), SR)
    paths = build.write_tasks(str(tmp_path), rows)
    assert sorted(paths) == sorted(build.TASK_NAMES)

    loaded = {name: load_custom_task(path) for name, path in paths.items()}
    key_spec, key_data = loaded["dev-key"]
    assert key_spec.metric == "myna_key" and key_spec.label_names == tuple(KEY_NAMES)
    tags_spec, tags_data = loaded["dev-instruments"]
    assert tags_spec.label_names == scores.GM_FAMILIES and tags_spec.primary == "roc_auc_macro"
    assert loaded["dev-composer"][0].label_names == ("bach", "mozart")
    assert loaded["dev-tempo"][0].primary == "r2_mean"
    by_file = {os.path.normpath(tmp_path / r["file"]): r for r in rows}
    for split in SPLITS:
        for audio, label in zip(column(tags_data[split], "audio"), column(tags_data[split], "label")):
            row = by_file[audio]
            assert row["split"] == split
            assert {f for f, on in zip(scores.GM_FAMILIES, label) if on} == set(row["instruments"].split(";"))
        for audio, label in zip(column(key_data[split], "audio"), column(key_data[split], "label")):
            assert KEY_NAMES[label] == by_file[audio]["key"]


# ---------------------------------------------------------------------------------------------- rendering


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="no fluidsynth (apt-get install fluidsynth)")
def test_fluidsynth_renders_each_clip_of_a_batch_at_its_pitch():
    try:
        soundfont = scores.find_soundfont()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    piece = scores.ScorePiece("t/a", "t", "t/a", "", [[(0.0, 4.0, 69)]], 4.0)
    plans = [
        scores.ClipPlan(f"t/a@{i}", "t/a", "t", "t/a", 0.0, 60.0, shift, [73], ["pipe"], None, 0.0, 1.5, [90])
        for i, shift in enumerate((0, 3))
    ]
    audios = scores.render_batch({"t/a": piece}, plans, soundfont, SR, gap_seconds=1.0)
    assert [len(a) for a in audios] == [int(1.5 * SR)] * 2
    for audio, expected in zip(audios, (440.0, 523.25)):  # A4, and A4 + 3 semitones = C5
        spectrum = np.abs(np.fft.rfft(audio[SR // 4 : SR] * np.hanning(3 * SR // 4)))
        peak = np.fft.rfftfreq(3 * SR // 4, 1 / SR)[spectrum.argmax()]
        assert abs(peak - expected) < 8, peak


def synthetic_render(pieces, plans, soundfont, sampling_rate=SR, **kwargs):
    """A stand-in for FluidSynth: each clip's notes as sines, or as square waves when the font's name says so."""
    clips = []
    for plan in plans:
        t = np.arange(round(plan.seconds * sampling_rate)) / sampling_rate
        audio = np.zeros_like(t)
        for part in scores.clip_notes(pieces[plan.piece_id], plan):
            for start, duration, pitch in part:
                wave = np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)
                audio += ((t >= start) & (t < start + duration)) * (np.sign(wave) if "square" in soundfont else wave)
        clips.append((0.1 * audio).astype(np.float32))
    return clips


def test_clips_from_renders_the_same_clips_through_another_soundfont(tmp_path, monkeypatch):
    works = {c: [scale_piece(f"{c}/w{w}.1", c, f"{c}/w{w}") for w in range(4)] for c in ("bach", "mozart")}
    pieces = {p.piece_id: p for found in works.values() for p in found}
    monkeypatch.setattr(
        tasks_stage, "select_pieces", lambda args, scratch: ({c: works[c] for c in args.collections.split(",")}, {})
    )
    monkeypatch.setattr(tasks_rerender, "load_pieces", lambda ids, scratch, workers: ({i: pieces[i] for i in ids}, {}))
    monkeypatch.setattr(scores, "render_batch", synthetic_render)
    monkeypatch.setattr(system_tools, "ensure_renderer", lambda install, soundfont: soundfont or "/fonts/sine.sf2")
    first, second = tmp_path / "first", tmp_path / "second"
    options = dict(stages="tasks", workers=1, progress=False)
    build.run(build.BuildArguments(output=str(first), collections="bach,mozart", clips_per_class=6, **options))
    # The task options are the first benchmark's; those given here (every default collection) are not used.
    again = dict(output=str(second), clips_from=str(first), soundfont="/fonts/square.sf2", **options)
    summary = build.run(build.BuildArguments(**again))["tasks"]

    names = sorted(os.listdir(first / "tasks"))
    assert names == sorted(os.listdir(second / "tasks")) and "clips.csv" in names
    for name in names:  # clips.csv, key.csv and the task files: the same clips, labels and splits
        if os.path.isfile(first / "tasks" / name):
            assert (first / "tasks" / name).read_text() == (second / "tasks" / name).read_text(), name
    with open(first / "tasks/clips.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == summary["clips"] == 8 and summary["clips_missing"] == 0
    for row in rows:
        before, after = sf.read(first / "tasks" / row["file"])[0], sf.read(second / "tasks" / row["file"])[0]
        assert len(before) == len(after) and np.abs(before - after).max() > 0.05  # the same notes, other sounds
    assert summary["soundfont"] == "/fonts/square.sf2" and summary["source_soundfont"] == "/fonts/sine.sf2"
    assert build.run(build.BuildArguments(**again))["tasks"]["seconds"] == summary["seconds"]  # done: skipped

    with pytest.raises(ValueError, match=r"--soundfont /fonts/sine.sf2 is the one .* was rendered with"):
        build.run(build.BuildArguments(**{**again, "output": str(tmp_path / "third"), "soundfont": None}))
    # A clip listed twice (as the parsed-score cache once made): listed twice again, rendered once.
    text = (first / "tasks/clips.csv").read_text()
    (first / "tasks/clips.csv").write_text(text + text.splitlines(keepends=True)[1])
    summary = build.run(build.BuildArguments(**{**again, "output": str(tmp_path / "twice")}))["tasks"]
    assert (tmp_path / "twice/tasks/clips.csv").read_text() == (first / "tasks/clips.csv").read_text()
    assert summary["clips"] == 9 and len(list((tmp_path / "twice/tasks/audio").rglob("*.flac"))) == 8

    # A benchmark planned otherwise (another planner, or corpus).
    changed = text.replace(f",{rows[0]['tempo']},", f",{float(rows[0]['tempo']) + 1},", 1)
    (first / "tasks/clips.csv").write_text(changed)
    with pytest.raises(
        ValueError,
        match=rf"1 of its 8 clips are planned differently now \(clip {rows[0]['clip']}: "
        r"tempo",
    ):
        build.run(build.BuildArguments(**{**again, "output": str(tmp_path / "third")}))


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="no fluidsynth (apt-get install fluidsynth)")
def test_two_debian_soundfonts_play_the_same_notes_with_other_sounds():
    fonts = list(system_tools.SOUNDFONT_PACKAGES)
    if not all(os.path.isfile(f) for f in fonts):
        pytest.skip(f"needs {', '.join(system_tools.SOUNDFONT_PACKAGES.values())}")
    piece = scores.ScorePiece("t/a", "t", "t/a", "", [[(0.0, 4.0, 69)]], 4.0)
    plan = scores.ClipPlan("t/a@0", "t/a", "t", "t/a", 0.0, 60.0, 0, [0], ["piano"], None, 0.0, 1.5, [90])
    audios = [scores.render_batch({"t/a": piece}, [plan], font, SR, gap_seconds=1.0)[0] for font in fonts]
    for audio in audios:
        spectrum = np.abs(np.fft.rfft(audio[SR // 4 : SR] * np.hanning(3 * SR // 4)))
        assert abs(np.fft.rfftfreq(3 * SR // 4, 1 / SR)[spectrum.argmax()] - 440) < 8  # A4 in both
    a, b = (x / np.linalg.norm(x) for x in audios)
    assert np.dot(a, b) < 0.9  # but not the same waveform


# ---------------------------------------------------------------------------------------------- soundtracks


def melody(seconds: float, seed: int) -> np.ndarray:
    """Random notes of 0.25-1 s with a little noise: music-like, and different for each seed."""
    rng = np.random.default_rng(seed)
    out = []
    while sum(len(o) for o in out) < seconds * SR:
        n = int(rng.uniform(0.25, 1.0) * SR)
        t = np.arange(n) / SR
        f = 110 * 2 ** (rng.integers(0, 36) / 12)
        out.append(np.sin(2 * np.pi * f * t) * np.exp(-3 * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t) * np.exp(-5 * t))
    audio = np.concatenate(out)[: int(seconds * SR)]
    return (0.2 * audio + 0.001 * rng.standard_normal(len(audio))).astype(np.float32)


def test_music_paths_and_archives(tmp_path, monkeypatch):
    (tmp_path / "usr/share/game/music").mkdir(parents=True)
    (tmp_path / "usr/share/game/sounds").mkdir(parents=True)
    sf.write(tmp_path / "usr/share/game/music/theme.ogg", melody(1, 0), SR)
    sf.write(tmp_path / "usr/share/game/sounds/boom.ogg", melody(1, 1), SR)
    with zipfile.ZipFile(tmp_path / "usr/share/game/music.pk3", "w") as archive:
        archive.write(tmp_path / "usr/share/game/music/theme.ogg", "sound/cdtracks/track.ogg")
        archive.writestr("readme.txt", "not audio")
    found = soundtracks.find_music("game", str(tmp_path))
    assert [os.path.relpath(s.name, tmp_path) for s in found] == [
        "usr/share/game/music.pk3!sound/cdtracks/track.ogg",
        "usr/share/game/music/theme.ogg",
    ]
    assert found[0].read_bytes() == found[1].read_bytes()
    assert soundtracks.is_music_path("a/albums/legacy_soundtrack/x.ogg") and not soundtracks.is_music_path("music.ogg")

    # A package that keeps music elsewhere: a folder not named for it, files without an extension, a data archive.
    (tmp_path / "usr/share/game/themes").mkdir(parents=True)
    sf.write(tmp_path / "usr/share/game/themes/castle.ogg", melody(1, 2), SR)
    shutil.copy(tmp_path / "usr/share/game/themes/castle.ogg", tmp_path / "usr/share/game/music/arctic")
    (tmp_path / "usr/share/game/music/arctic.tags").write_text("title: Arctic")
    with zipfile.ZipFile(tmp_path / "usr/share/game/public.zip", "w") as archive:
        archive.write(tmp_path / "usr/share/game/music/theme.ogg", "audio/music/menu.ogg")
        archive.write(tmp_path / "usr/share/game/sounds/boom.ogg", "audio/sounds/boom.ogg")
    assert len(soundtracks.find_music("game", str(tmp_path))) == 2
    layout = soundtracks.MusicLayout(folders=("themes",), archives=("public.zip",), untyped=True)
    monkeypatch.setitem(soundtracks.MUSIC_LAYOUTS, "game", layout)
    assert [os.path.relpath(s.name, tmp_path) for s in soundtracks.find_music("game", str(tmp_path))] == [
        "usr/share/game/music.pk3!sound/cdtracks/track.ogg",
        "usr/share/game/music/arctic",
        "usr/share/game/music/theme.ogg",
        "usr/share/game/public.zip!audio/music/menu.ogg",
        "usr/share/game/themes/castle.ogg",
    ]
    assert len(soundtracks.find_music("other", str(tmp_path))) == 2  # only for the package named


def test_package_sets_keep_the_first_one_as_default():
    soundtracks14 = (
        "wesnoth-1.16-music,warzone2100-music,supertux-data,freedroidrpg-data,widelands-data,nexuiz-music,"
        "planetblupi-music-ogg,singularity-music,megaglest-data"
    )  # the packages, in order, of every result measured before package sets: their manifests stay done
    assert ",".join(build.package_names(build.BuildArguments())) == soundtracks14
    wide = build.package_names(build.BuildArguments(package_set="wide"))
    assert ",".join(wide[:9]) == soundtracks14 and len(wide) == len(set(wide)) > 9
    assert set(soundtracks.MUSIC_LAYOUTS) <= set(wide)
    assert build.package_names(build.BuildArguments(package_set="wide", packages="a, b")) == ["a", "b"]


def test_loops_are_found_and_cut_after_the_first_period():
    phrase = melody(40, 2)
    looped = np.concatenate([melody(7, 3), phrase, phrase, phrase, phrase])  # intro, then a 40 s loop x4
    kept = soundtracks.loop_length(soundtracks.fingerprint(looped))
    assert kept is not None and abs(kept - 47) <= 1.5
    assert soundtracks.loop_length(soundtracks.fingerprint(melody(150, 4))) is None


def test_near_duplicates_drop_the_shorter_copy():
    long = melody(90, 5)
    prints = {
        "long": soundtracks.fingerprint(long),
        "excerpt": soundtracks.fingerprint(0.5 * long[int(20.2 * SR) : 70 * SR]),  # quieter, cut off the frame grid
        "other": soundtracks.fingerprint(melody(60, 6)),
    }
    assert soundtracks.near_duplicates(prints) == {"excerpt": "long"}


def test_decide_counts_jingles_silence_and_duplicates():
    def record(name, seconds, sha, rms=0.1, loop=None, error=None):
        return {
            "package": "p",
            "source": name,
            "seconds": seconds,
            "sha256": sha,
            "rms": rms,
            "loop_seconds": loop,
            **({"error": error} if error else {}),
        }

    records = build.decide(
        [
            record("a", 120, "x"),
            record("b", 120, "x"),  # the same bytes as a
            record("c", 12, "y"),  # a jingle
            record("d", 600, "z", loop=25),  # a 25 s loop: a jingle once cut
            record("e", 90, "w", rms=0.0),
            record("f", 0, "", error="AudioDecodeError: not audio"),
            record("g", 600, "v", loop=150),
        ],
        min_seconds=30,
    )
    status = {r["source"]: (r["status"], r.get("kept_seconds"), r["duplicate_of"]) for r in records}
    assert status["a"] == ("kept", 120, "") and status["b"] == ("duplicate", 120, "a")
    assert status["c"][0] == status["d"][0] == "jingle" and status["e"][0] == "silent"
    assert status["f"][0] == "unreadable" and status["g"] == ("kept", 150, "")


def test_pretrain_stage_resumes_and_records_hours(tmp_path, monkeypatch):
    source = tmp_path / "src"
    files = {"p1": {"music/a.ogg": 40, "music/b.ogg": 35, "music/jingle.ogg": 5}, "p2": {"music/c.flac": 31}}
    for seed, (package, name, seconds) in enumerate((p, n, s) for p, f in files.items() for n, s in f.items()):
        path = source / package / "usr/share" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, melody(seconds, 10 + seed), SR)
    shutil.copy(source / "p1/usr/share/music/a.ogg", source / "p2/usr/share/music/a_copy.ogg")
    monkeypatch.setattr(soundtracks, "resolve_package", lambda name: name)
    monkeypatch.setattr(soundtracks, "download_deb", lambda name, folder: str(source / name))
    monkeypatch.setattr(soundtracks, "unpack_deb", lambda deb, folder: deb)
    monkeypatch.setattr(system_tools, "ensure_package_tools", lambda: None)
    output = tmp_path / "bench"
    args = dict(output=str(output), stages="pretrain", packages="p1,p2", workers=1, progress=False)

    summary = build.run(build.BuildArguments(**args))["pretrain"]
    files = sorted(str(p.relative_to(output / "pretrain")) for p in (output / "pretrain").rglob("*") if p.is_file())
    assert files == ["p1/music__a.flac", "p1/music__b.flac", "p2/music__c.flac"]
    assert summary["packages"]["p1"]["dropped"] == {"jingle": 1}
    assert summary["packages"]["p2"]["dropped"] == {"duplicate": 1}
    assert abs(summary["hours"] - (40 + 35 + 31) / 3600) < 1e-3
    assert abs(summary["hours_found"] - (40 + 35 + 5 + 31 + 40) / 3600) < 1e-3  # before cleaning
    assert summary["packages"]["p1"]["hours_found"] == round(80 / 3600, 3)
    assert build.hours_table(summary).splitlines()[2:] == [
        "| `p1` | 0.02 | 0.02 | 2 |",
        "| `p2` | 0.02 | 0.01 | 1 |",
        "| all | 0.04 | 0.03 | 3 |",
    ]
    assert not list(output.rglob("*.tmp*"))
    info = sf.info(output / "pretrain/p1/music__a.flac")
    assert info.samplerate == SR and info.channels == 1

    # Done stages are skipped; a lost output file (an interrupted copy) is written again, the others are kept.
    stamp = os.path.getmtime(output / "pretrain/p1/music__b.flac")
    again = build.run(build.BuildArguments(**args))["pretrain"]
    assert {k: v for k, v in again.items() if k != "settings"} == summary
    (output / "pretrain/p1/music__a.flac").unlink()
    stale = temporary_name(str(output / "pretrain/p1/music__b.flac"), suffix=".flac")  # a killed run's
    (output / "pretrain/p1" / os.path.basename(stale)).write_bytes(b"half a file")
    manifest = output / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"pretrain": {', '"pretrain-old": {'))
    build.run(build.BuildArguments(**args, keep_scratch=True))
    assert (output / "pretrain/p1/music__a.flac").is_file()
    assert os.path.getmtime(output / "pretrain/p1/music__b.flac") == stamp
    assert not list(output.rglob("*.tmp*"))


def test_missing_renderer_and_unknown_collections_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(system_tools.shutil, "which", lambda name: None)
    monkeypatch.setattr(scores, "find_soundfont", lambda path=None: (_ for _ in ()).throw(FileNotFoundError(path)))
    with pytest.raises(
        FileNotFoundError,
        match=r"fluidsynth, fluid-soundfont-gm missing \(to render the labelled "
        r"clips\): install with `apt-get install -y fluidsynth fluid-soundfont-gm`",
    ):
        build.ensure_renderer(install=False, soundfont=None)
    with pytest.raises(FileNotFoundError, match=r"timgm6mb-soundfont missing"):  # a SoundFont Debian ships
        build.ensure_renderer(install=False, soundfont="/usr/share/sounds/sf2/TimGM6mb.sf2")
    with pytest.raises(FileNotFoundError, match=r"--soundfont /nowhere/x.sf2: no such file"):
        build.ensure_renderer(install=False, soundfont="/nowhere/x.sf2")
    with pytest.raises(FileNotFoundError, match=r"apt-get, apt-cache, dpkg not found: .* \(--stages tasks\)"):
        build.run(build.BuildArguments(output=str(tmp_path), stages="pretrain", progress=False))
    monkeypatch.setattr(system_tools, "ensure_renderer", lambda install, soundfont: "font.sf2")
    with pytest.raises(ValueError, match=r"--collections bachh: not folders of music21's corpus; found .*bach, "):
        build.run(build.BuildArguments(output=str(tmp_path), stages="tasks", collections="bach,bachh", progress=False))


def test_system_packages_are_installed_only_when_asked(monkeypatch):
    spec = importlib.util.spec_from_file_location("build_dev_benchmark", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(build, "run", lambda args: args)
    assert script.main(["--output", "x"]).install is False and script.main(["--install"]).install is True
    installed = {"apt-get"}
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        installed.update(command[4:])
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(system_tools.subprocess, "run", run)
    monkeypatch.setattr(system_tools.shutil, "which", lambda name: f"/usr/bin/{name}" if name in installed else None)
    monkeypatch.setattr(scores, "find_soundfont", lambda path=None: "/usr/share/sounds/sf2/FluidR3_GM.sf2")
    with pytest.raises(system_tools.MissingToolError) as error:
        build.ensure_renderer(install=False, soundfont=None)
    message = str(error.value)
    assert "\n" not in message and message.startswith("fluidsynth missing")
    assert "`apt-get install -y fluidsynth` (as root), or rerun with --install" in message
    assert calls == []  # nothing ran

    monkeypatch.setattr(system_tools.os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match=r"--install runs `apt-get install -y fluidsynth`, which needs root"):
        build.ensure_renderer(install=True, soundfont=None)
    assert calls == []
    monkeypatch.setattr(system_tools.os, "geteuid", lambda: 0)
    assert build.ensure_renderer(install=True, soundfont=None) == "/usr/share/sounds/sf2/FluidR3_GM.sf2"
    assert calls == [["apt-get", "install", "-y", "-q", "fluidsynth"]]


def test_a_download_lands_whole_and_apt_may_write_its_folder(tmp_path, monkeypatch):
    owners = {}

    def apt_get(command, cwd, **kwargs):  # apt-get download writes into its working folder
        assert command == ["apt-get", "download", "tune"] and owners[cwd] == (42, 65534)
        (tmp_path / "debs" / os.path.basename(cwd) / "tune_1_all.deb").write_bytes(b"deb")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(soundtracks.subprocess, "run", apt_get)
    monkeypatch.setattr(soundtracks, "_apt_sandbox_ids", lambda: (42, 65534))  # as root: apt fetches as _apt
    monkeypatch.setattr(soundtracks.os, "chown", lambda path, uid, gid: owners.__setitem__(str(path), (uid, gid)))
    deb = soundtracks.download_deb("tune", str(tmp_path / "debs"))
    assert deb == str(tmp_path / "debs/tune_1_all.deb") and owners[deb] == (os.geteuid(), os.getegid())
    assert os.listdir(tmp_path / "debs") == ["tune_1_all.deb"]  # no temporary folder left
    assert soundtracks.download_deb("tune", str(tmp_path / "debs")) == deb  # fetched once


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")
def test_a_package_is_unpacked_whole_or_not_at_all(tmp_path):
    package = tmp_path / "package"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: tune\nVersion: 1\nArchitecture: all\nMaintainer: a <a@b.c>\nDescription: a tune\n"
    )
    (package / "usr/share/music").mkdir(parents=True)
    (package / "usr/share/music/a.ogg").write_bytes(b"OggS")
    subprocess.run(["dpkg-deb", "--build", str(package), str(tmp_path / "tune.deb")], check=True, capture_output=True)
    unpacked = tmp_path / "unpacked"
    assert soundtracks.unpack_deb(str(tmp_path / "tune.deb"), str(unpacked / "tune")) == str(unpacked / "tune")
    assert (unpacked / "tune/usr/share/music/a.ogg").read_bytes() == b"OggS"
    (tmp_path / "broken.deb").write_bytes(b"half a download")
    with pytest.raises(soundtracks.PackageError, match="dpkg -x .* failed"):
        soundtracks.unpack_deb(str(tmp_path / "broken.deb"), str(unpacked / "broken"))
    assert sorted(os.listdir(unpacked)) == ["tune"]  # no partial folder left
