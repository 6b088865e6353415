"""Tests of myna_training.data: sources, bad-file counting, the spectrogram cache and vectorised crops."""

import re
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from modeling_myna import MynaFeatureExtractor
from myna_training.data import (
    MUSIC_ID,
    SkipReport,
    SpectrogramBank,
    audioset_csv_clips,
    audioset_hub_clips,
    audioset_music_ids,
    compute_spectrograms,
    decode_spectrograms,
    encode_spectrogram,
    folder_clips,
    gather_crops,
    random_crop_starts,
)


SR = 16_000


def tone(seconds, frequency=440.0, amplitude=0.3, sampling_rate=SR):
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture
def messy_folder(tmp_path):
    """4 good clips in nested folders, plus one corrupt, one empty, one silent and one too-short file."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    sf.write(tmp_path / "good0.wav", tone(4.0, 220), SR)
    sf.write(tmp_path / "a" / "good1.flac", tone(3.5, 330), SR)
    sf.write(tmp_path / "a" / "b" / "good2.wav", tone(5.0, 440, sampling_rate=22_050), 22_050)  # resampled to 16 kHz
    sf.write(tmp_path / "a" / "b" / "good3.ogg", tone(4.0, 550), SR)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    (tmp_path / "empty.mp3").write_bytes(b"")
    sf.write(tmp_path / "silent.wav", np.zeros(4 * SR, dtype=np.float32), SR)
    sf.write(tmp_path / "short.wav", tone(1.0), SR)
    (tmp_path / "notes.txt").write_text("not audio, not listed")
    return tmp_path


def test_music_ids_are_the_ontology_subtree():
    ids = audioset_music_ids()
    assert len(ids) == 189 and ids[MUSIC_ID] == "Music"
    # Children, grandchildren and nodes whose entry sits elsewhere in the ontology (Choir under Singing).
    assert ids["/m/04szw"] == "Musical instrument" and ids["/m/0l14jd"] == "Choir" and ids["/m/01c194"] == "Mantra"
    assert ids["/t/dd00037"] == "Scary music" and "/m/09x0r" not in ids  # Speech is not music


def test_corrupt_empty_silent_and_short_files_are_skipped_and_counted(messy_folder, tmp_path_factory):
    clips = folder_clips(str(messy_folder))
    assert len(clips) == 8  # the .txt is not listed
    skipped = SkipReport()
    cache = tmp_path_factory.mktemp("cache") / "spectrograms.arrow"
    feature_extractor = MynaFeatureExtractor()
    spectrograms = compute_spectrograms(
        clips, feature_extractor, min_frames=96, skipped=skipped, cache_file=str(cache), batch_size=3
    )
    assert sorted(spectrograms["id"]) == ["a/b/good2.wav", "a/b/good3.ogg", "a/good1.flac", "good0.wav"]
    assert skipped.total == 4
    assert skipped.counts == {"undecodable": 2, "silent": 1, "shorter than 96 frames": 1}
    assert "4 clips skipped" in str(skipped) and "silent.wav" in str(skipped)
    # Frames of a centred STFT, after resampling 22.05 kHz to 16 kHz.
    frames = dict(zip(spectrograms["id"], spectrograms["num_frames"]))
    assert frames["good0.wav"] == 4 * SR // 512 + 1 and frames["a/b/good2.wav"] == 5 * SR // 512 + 1
    # The stored spectrogram is the feature extractor's, transposed to (frames, mels).
    stored = spectrograms.with_format("numpy")[spectrograms["id"].index("good0.wav")]["spectrogram"]
    expected = feature_extractor(tone(4.0, 220), sampling_rate=SR, chunk=False, return_tensors="pt")["input_values"][0]
    torch.testing.assert_close(decode_spectrograms(stored), expected, rtol=1e-3, atol=1e-2)  # batched conv STFT
    assert cache.exists()
    # A second run reads the cache and still reports the skips.
    again = SkipReport()
    compute_spectrograms(clips, feature_extractor, min_frames=96, skipped=again, cache_file=str(cache), batch_size=3)
    assert again.counts == skipped.counts


def test_bfloat16_storage_round_trip_keeps_large_power_values():
    spectrogram = torch.tensor([[1e6, 3.0], [0.5, 2e5]])
    stored = encode_spectrogram(spectrogram, "bfloat16")
    assert stored.dtype == np.uint16 and stored.shape == (2, 2)
    decoded = decode_spectrograms(stored, bfloat16=True)
    assert decoded.dtype == torch.bfloat16
    torch.testing.assert_close(decoded.float(), spectrogram, rtol=1e-2, atol=0)  # float16 would overflow at 1e6
    values = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) ** 8 * 1e6
    rounded = decode_spectrograms(encode_spectrogram(values[None], "bfloat16"), bfloat16=True).float()[0]
    assert ((rounded - values).abs() / values).max() <= 2**-8  # 8 significant bits, round to nearest
    with pytest.raises(ValueError, match="float16 overflows"):
        from myna_training.data import spectrogram_features

        spectrogram_features(128, "float16")


def test_crop_starts_are_uniform_in_range_and_respect_max_distance():
    generator = torch.Generator().manual_seed(0)
    num_frames = torch.tensor([96, 100, 313] * 2000)
    first, second = random_crop_starts(num_frames, 96, generator)
    assert torch.all(first[num_frames == 96] == 0) and torch.all(second[num_frames == 96] == 0)
    assert set(first[num_frames == 100].tolist()) == {0, 1, 2, 3, 4}
    long_first = first[num_frames == 313].float()
    assert long_first.max() == 217 and abs(long_first.mean().item() - 108.5) < 4  # uniform on 0..217
    first, second = random_crop_starts(num_frames, 96, generator, max_distance=10)
    assert torch.all((first - second).abs() <= 10) and torch.all(second <= num_frames - 96) and torch.all(second >= 0)
    assert (first - second).abs().max() == 10


def test_bank_crops_equal_slicing_each_clip():
    generator = torch.Generator().manual_seed(1)
    specs = [torch.rand(128, n, generator=generator) for n in (100, 313, 96)]
    bank = SpectrogramBank(torch.cat([s.T for s in specs]), torch.tensor([100, 313, 96]))
    index = torch.tensor([1, 0, 2, 1])
    view1, view2 = bank.crop_pair(index, 96, torch.Generator().manual_seed(5))
    first, second = random_crop_starts(bank.num_frames[index], 96, torch.Generator().manual_seed(5))
    for row, clip in enumerate(index.tolist()):
        torch.testing.assert_close(view1[row], specs[clip][:, first[row] : first[row] + 96])
        torch.testing.assert_close(view2[row], specs[clip][:, second[row] : second[row] + 96])
    torch.testing.assert_close(gather_crops(bank.frames, torch.tensor([100]), 96)[0], specs[1][:, :96])


def test_bank_from_cached_dataset(messy_folder):
    spectrograms = compute_spectrograms(
        folder_clips(str(messy_folder)), MynaFeatureExtractor(), 96, SkipReport(), storage_dtype="bfloat16"
    )
    bank = SpectrogramBank.from_dataset(spectrograms)
    assert bank.frames.dtype == torch.bfloat16 and len(bank) == 4
    full = SpectrogramBank.from_dataset(
        compute_spectrograms(folder_clips(str(messy_folder)), MynaFeatureExtractor(), 96, SkipReport())
    )
    assert full.frames.dtype == torch.float32 and full.frames.max() > 1e3
    torch.testing.assert_close(bank.frames.float(), full.frames, rtol=1e-2, atol=1e-3)
    assert bank.frames.shape == (sum(spectrograms["num_frames"]), 128)
    assert bank.offsets.tolist() == np.concatenate([[0], np.cumsum(spectrograms["num_frames"])[:-1]]).tolist()


def test_audioset_csv_keeps_music_segments_with_files(tmp_path):
    csv = tmp_path / "balanced_train_segments.csv"
    csv.write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=3, num_segs=3, num_unique_labels=3, num_positive_labels=4\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"\n'  # speech: not music
        '--ZhevVpy1s, 50.000, 60.000, "/m/012xff"\n'
        '-0CamVQdP_Y, 0.000, 6.000, "/m/09x0r,/m/0l14jd"\n'  # choir: a music descendant
        '-0DLPzsiXXE, 30.000, 40.000, "/m/04rlf"\n'  # music, but no file
    )
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "-0CamVQdP_Y.wav", tone(4.0), SR)
    sf.write(audio / "--PJHxphWEs.wav", tone(4.0), SR)
    skipped = SkipReport()
    clips = audioset_csv_clips(str(csv), str(audio), skipped)
    assert clips["id"] == ["-0CamVQdP_Y"]
    assert skipped.counts == {"missing file": 1}


def test_audioset_hub_offline_fails_with_a_clear_message():
    with pytest.raises(RuntimeError, match="could not load the Hub dataset 'agkphysics/AudioSet'.*audioset_csv"):
        audioset_hub_clips("agkphysics/AudioSet", "balanced", "train", streaming=False)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="no audio files"):
        folder_clips(str(tmp_path))
    with pytest.raises(ValueError, match="is not a folder"):
        folder_clips(str(tmp_path / "missing"))


def test_streamed_set_yields_vectorised_crops_and_a_resumable_position(messy_folder):
    from myna_training.data import StreamingSpectrograms

    stream = compute_spectrograms(
        folder_clips(str(messy_folder)).to_iterable_dataset(), MynaFeatureExtractor(), 96, SkipReport(), batch_size=4
    )
    skipped = SkipReport()
    data = StreamingSpectrograms(stream, batch_size=3, device="cpu", shuffle_buffer_size=0, skipped=skipped)
    view1, view2, index = data.next_batch(96, torch.Generator().manual_seed(0))
    assert index is None  # this stream has no stable index column
    assert view1.shape == view2.shape == (3, 128, 96) and view1.dtype == torch.float32
    assert view1.abs().sum() > 0 and not torch.equal(view1, view2)
    # Each view is a window of its clip's spectrogram, at the starts the same generator draws.
    from myna_training.data import decode_spectrograms, random_crop_starts

    rows = [r for r in stream if r["skip_reason"] is None][:3]
    spectrograms = [decode_spectrograms(r["spectrogram"], False) for r in rows]
    first, second = random_crop_starts(
        torch.tensor([s.shape[1] for s in spectrograms]), 96, torch.Generator().manual_seed(0)
    )
    for i, spectrogram in enumerate(spectrograms):
        torch.testing.assert_close(view1[i], spectrogram[:, first[i] : first[i] + 96])
        torch.testing.assert_close(view2[i], spectrogram[:, second[i] : second[i] + 96])
    state = data.state_dict()
    assert state["epoch"] == 0 and "dataset" in state
    # 4 usable clips (bad files filtered on the fly): the second batch wraps into epoch 1.
    data.next_batch(96, torch.Generator().manual_seed(1))
    assert data.epoch == 1
    assert skipped.counts == {"undecodable": 2, "silent": 1, "shorter than 96 frames": 1}


def test_worker_processes_give_the_same_spectrograms_and_reload_their_shards(messy_folder, tmp_path_factory):
    clips = folder_clips(str(messy_folder))
    feature_extractor = MynaFeatureExtractor()
    single = compute_spectrograms(clips, feature_extractor, 96, SkipReport(), batch_size=2)
    cache = tmp_path_factory.mktemp("cache") / "spectrograms.arrow"
    skipped = SkipReport()
    parallel = compute_spectrograms(
        clips, feature_extractor, 96, skipped, cache_file=str(cache), batch_size=2, num_proc=2
    )
    assert parallel["id"] == single["id"] and parallel["num_frames"] == single["num_frames"]  # order kept
    for ours, theirs in zip(parallel.with_format("numpy")["spectrogram"], single.with_format("numpy")["spectrogram"]):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-6 * np.abs(theirs).max()
    assert skipped.counts == {"undecodable": 2, "silent": 1, "shorter than 96 frames": 1}
    # Each worker wrote its contiguous shard; a later run reloads them (whatever its num_proc) and counts the skips.
    shards = sorted(cache.parent.glob("spectrograms_*_of_00002.arrow"))
    assert [s.name for s in shards] == ["spectrograms_00000_of_00002.arrow", "spectrograms_00001_of_00002.arrow"]
    written = [s.stat().st_mtime_ns for s in shards]
    for num_proc in (2, 1):
        again = SkipReport()
        reloaded = compute_spectrograms(
            clips, feature_extractor, 96, again, cache_file=str(cache), batch_size=2, num_proc=num_proc
        )
        assert reloaded["id"] == parallel["id"] and again.counts == skipped.counts
    assert [s.stat().st_mtime_ns for s in shards] == written and not cache.exists()


def test_spectrogram_workers_run_single_threaded_but_the_main_process_keeps_its_threads(messy_folder):
    import os

    from myna_training.data import make_spectrogram_function

    clips = folder_clips(str(messy_folder)).select(range(2))
    function = make_spectrogram_function(MynaFeatureExtractor(), 96, "float32", "cpu", single_threaded_workers=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        function(clips[:2])
        assert torch.get_num_threads() == 2  # a map in the main process leaves the training threads alone
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a worker, as datasets forks them
            try:
                function(clips[:2])
                os.write(write, str(torch.get_num_threads()).encode())
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 16) == b"1"
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------------
# The on-disk store, out-of-core reading, the placement decision


def random_spectrogram_dataset(num_frames, seed=0, storage_dtype="bfloat16"):
    """A `compute_spectrograms`-style dataset of random power spectrograms (values up to 1e6), without audio."""
    import datasets

    from myna_training.data import encode_spectrogram, spectrogram_features

    generator = torch.Generator().manual_seed(seed)
    rows = {"id": [], "spectrogram": [], "num_frames": [], "skip_reason": [], "index": []}
    for i, n in enumerate(num_frames):
        spectrogram = torch.rand(128, n, generator=generator) ** 4 * 1e6
        rows["id"].append(f"clip{i}")
        rows["spectrogram"].append(encode_spectrogram(spectrogram, storage_dtype))
        rows["num_frames"].append(n)
        rows["skip_reason"].append("")
        rows["index"].append(i)
    dataset = datasets.Dataset.from_dict(rows, features=spectrogram_features(128, storage_dtype))
    return dataset.remove_columns("skip_reason")


@pytest.mark.parametrize("storage_dtype", ["bfloat16", "float32"])
def test_store_round_trips_and_out_of_core_crops_equal_resident_crops(tmp_path, storage_dtype):
    from myna_training.data import BatchPlan, CropPrefetcher, SpectrogramStore

    num_frames = [313, 96, 200, 150, 313, 97, 120, 313, 250, 99]
    dataset = random_spectrogram_dataset(num_frames, storage_dtype=storage_dtype)
    skipped = SkipReport()
    skipped.add("silent", "quiet.wav")
    store = SpectrogramStore.write(dataset, str(tmp_path / "store"), skipped)
    assert not (tmp_path / "store.tmp").exists() and len(store) == 10 and store.total_frames == sum(num_frames)
    assert store.nbytes == sum(num_frames) * 128 * (2 if storage_dtype == "bfloat16" else 4)
    assert SpectrogramStore(str(tmp_path / "store")).skip_report().counts == {"silent": 1}
    resident = store.bank("cpu", resident=True)
    mapped = store.bank("cpu", resident=False)
    assert resident.dtype == mapped.dtype == getattr(torch, storage_dtype) and len(mapped) == 10
    torch.testing.assert_close(resident.frames, SpectrogramBank.from_dataset(dataset).frames, rtol=0, atol=0)

    # Rank 1 of 2 (rows 3:6 of a global batch of 6), micro-batches 2, 3, 4 (crossing into epoch 1).
    plan = BatchPlan(store.num_frames, global_batch=6, crop_frames=96, seed=4, max_distance=None)
    rows = slice(3, 6)
    prefetcher = CropPrefetcher(mapped, plan, rows, "cpu", start=2)
    for micro in (2, 3, 4):
        index, first, second = plan(micro)
        index, first, second = index[rows], first[rows], second[rows]
        view1, view2, got_index = prefetcher.next()
        assert torch.equal(got_index, index)
        offsets = resident.offsets[index]
        assert torch.equal(view1, resident.crops(offsets + first, 96))
        assert torch.equal(view2, resident.crops(offsets + second, 96))
        for row, clip in enumerate(index.tolist()):  # and each is a window of its own clip
            clip_frames = resident.frames[resident.offsets[clip] : resident.offsets[clip] + num_frames[clip]]
            assert torch.equal(view1[row], clip_frames[first[row] : first[row] + 96].T)
    prefetcher.close()
    assert plan.batches_per_epoch == 1 and not torch.equal(plan(0)[0], plan(1)[0])  # a new order each epoch


def test_batch_plan_is_a_pure_function_of_seed_and_micro_batch():
    from myna_training.data import BatchPlan

    num_frames = torch.tensor([313, 96, 200, 150] * 8)
    a, b = BatchPlan(num_frames, 8, 96, seed=1), BatchPlan(num_frames, 8, 96, seed=1)
    for micro in (5, 0, 9, 5):  # any order of calls
        assert all(torch.equal(x, y) for x, y in zip(a(micro), b(micro)))
    assert not torch.equal(a(0)[1], BatchPlan(num_frames, 8, 96, seed=2)(0)[1])
    index, first, second = a(3)
    assert sorted(index.tolist()) == sorted(set(index.tolist())) and torch.all(first <= num_frames[index] - 96)
    # More views per clip (--num_views): the first two are the two-view plan's, every start in range.
    index3, *starts = BatchPlan(num_frames, 8, 96, seed=1, num_views=3)(3)
    assert len(starts) == 3 and torch.equal(index3, index)
    assert torch.equal(starts[0], first) and torch.equal(starts[1], second)
    assert torch.all(starts[2] <= num_frames[index] - 96) and not torch.equal(starts[2], second)


def test_out_of_core_reading_keeps_host_memory_flat(tmp_path):
    # Reading every clip of the store through the prefetcher leaves the process's memory (its own pages and any file
    # pages it maps) far below the store's size: crops are read into the batch, nothing is memory-mapped.
    from myna_training.data import BatchPlan, CropPrefetcher, SpectrogramStore

    store = SpectrogramStore.write(random_spectrogram_dataset([313] * 400), str(tmp_path / "store"), SkipReport())
    bank = store.bank("cpu", resident=False)

    def resident_kib():
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return {k: int(fields[k].split()[0]) for k in ("RssAnon", "RssFile")}

    plan = BatchPlan(store.num_frames, global_batch=8, crop_frames=96, seed=0)
    prefetcher = CropPrefetcher(bank, plan, slice(0, 8), "cpu")
    prefetcher.next()  # warm up the allocator and the thread
    before, peak_file = resident_kib(), 0
    for _ in range(plan.batches_per_epoch):  # every clip once
        view1, _, _ = prefetcher.next()
        peak_file = max(peak_file, resident_kib()["RssFile"])
    prefetcher.close()
    assert view1.shape == (8, 128, 96)
    assert resident_kib()["RssAnon"] - before["RssAnon"] < store.nbytes / 1024 / 4, "crops loaded the set into memory"
    assert peak_file - before["RssFile"] < store.nbytes / 1024 / 4, "the store's file was mapped into memory"


# ------------------------------------------------------------------------------ damaged stores (issue 19, item 1)


def damage(store_dir, how: str, storage_dtype: str) -> None:
    """Damages `frames.bin` of a store the way a disk, a copy or a kill would."""
    path = store_dir / "frames.bin"
    data = bytearray(path.read_bytes())
    row = 128 * (2 if storage_dtype == "bfloat16" else 4)
    if how == "truncated":
        data = data[: -10 * row]  # 10 rows short
    elif how == "padded":
        data += bytes(10 * row)  # 10 rows too many
    elif how == "bit-flipped":
        data[len(data) // 2] ^= 0x01  # one bit of a mantissa: a finite value, slightly off
    elif how == "nan-poisoned":
        nan = np.full(64 // (2 if storage_dtype == "bfloat16" else 4), np.nan, np.float32)
        data[4096 : 4096 + 64] = (
            torch.from_numpy(nan).to(torch.bfloat16).view(torch.int16).numpy().tobytes()
            if storage_dtype == "bfloat16" else nan.tobytes()
        )  # 64 bytes overwritten with NaN
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("storage_dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("how", ["truncated", "padded", "bit-flipped", "nan-poisoned"])
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "out_of_core"])
def test_a_damaged_store_is_refused_on_both_placements(tmp_path, how, resident, storage_dtype):
    from myna_training.data import DamagedStoreError, SpectrogramStore, StoreVerifier

    store_dir = tmp_path / "spectrograms-abc"
    dataset = random_spectrogram_dataset([313, 96, 200, 150, 313], storage_dtype=storage_dtype)
    written = SpectrogramStore.write(dataset, str(store_dir), SkipReport())
    assert written.meta["frames_bytes"] == (store_dir / "frames.bin").stat().st_size
    assert written.meta["checksum"]["algorithm"] == "xxh3_128"
    written.bank("cpu", resident=resident)  # whole: opens on both placements
    assert StoreVerifier(written).finish() is None

    damage(store_dir, how, storage_dtype)
    message = rf"the spectrogram store {store_dir} is damaged: .*Delete that folder \(rm -r {store_dir}\)"
    with pytest.raises(DamagedStoreError, match=message) as caught:
        store = SpectrogramStore(str(store_dir))  # the size: checked on opening, whatever the placement
        if resident:
            store.bank("cpu", resident=True)  # the checksum: checked while the whole file is read
        else:
            store.bank("cpu", resident=False)  # opens (size right) ...
            StoreVerifier(store).finish()  # ... and the background check finds it
    assert len(str(caught.value).splitlines()) == 1
    expected = {"truncated": "truncated", "padded": "longer than written"}.get(how, "checksum of frames.bin")
    assert expected in str(caught.value)


def test_non_finite_frames_are_refused_when_the_store_is_written(tmp_path):
    from myna_training.data import SpectrogramStore

    dataset = random_spectrogram_dataset([200, 150, 313])
    arrays = [np.asarray(a, dtype=np.uint16) for a in dataset["spectrogram"]]
    arrays[1] = arrays[1].copy()
    arrays[1][40, 7] = 0x7FC0  # a bfloat16 NaN in frame 40 of the second clip
    with pytest.raises(ValueError, match=r"clip 'clip1' \(clip 1\) has non-finite values .* from frame 40"):
        SpectrogramStore.write_arrays(
            str(tmp_path / "store"), iter(arrays), [200, 150, 313], "bfloat16", 128, ids=dataset["id"]
        )
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.tmp").exists()


def test_a_non_finite_crop_stops_the_prefetcher_with_the_clip_index(tmp_path):
    # Out-of-core training before the background check has finished: the crop is checked on the host.
    from myna_training.data import BatchPlan, CropPrefetcher, NonFiniteCropError, SpectrogramStore

    store = SpectrogramStore.write(random_spectrogram_dataset([96] * 8, storage_dtype="float32"), str(tmp_path / "s"), SkipReport())
    with open(store.frames_path, "r+b") as f:  # clip 5's frame 10, behind the store's back
        f.seek((5 * 96 + 10) * 128 * 4)
        f.write(np.full(128, np.inf, np.float32).tobytes())
    plan = BatchPlan(store.num_frames, global_batch=8, crop_frames=96, seed=0)
    prefetcher = CropPrefetcher(store.bank("cpu", resident=False), plan, slice(0, 8), "cpu", check_finite="Delete it.")
    with pytest.raises(NonFiniteCropError, match=r"the crop of clip 5 \(frames 0-96 of the clip\) holds NaN or inf"):
        prefetcher.next()
    prefetcher.close()


def test_placement_follows_the_size_and_refuses_what_cannot_fit():
    from myna_training.data import choose_placement

    gib = 2**30
    assert choose_placement("auto", 10 * gib, torch.device("cpu"), 100 * gib)[0] == "resident"
    assert choose_placement("auto", 61 * gib, torch.device("cpu"), 100 * gib)[0] == "out_of_core"
    # On the host every process holds its own copy: 4 x 10 GiB do not fit in half of 60 GiB.
    assert choose_placement("auto", 10 * gib, torch.device("cpu"), 60 * gib, processes_per_host=4)[0] == "out_of_core"
    assert choose_placement("out_of_core", gib, torch.device("cpu"), 100 * gib)[0] == "out_of_core"
    placement, numbers = choose_placement("auto", 61 * gib, torch.device("cuda"), 140 * gib)
    assert placement == "resident" and "61.00 GiB per process; 140.00 GiB free on the GPU" in numbers
    with pytest.raises(ValueError, match=r"do not fit in memory.*123.00 GiB per process; 75.00 GiB free on the GPU"):
        choose_placement("resident", 123 * gib, torch.device("cuda"), 75 * gib)
    with pytest.raises(ValueError, match="spectrogram_placement='disk'"):
        choose_placement("disk", gib, torch.device("cpu"), gib)


def test_a_set_that_fits_on_no_disk_says_how_much_it_needs(tmp_path):
    from myna_training.data import check_disk_space

    check_disk_space(str(tmp_path), 1024, "the spectrograms of 3 clips")
    with pytest.raises(ValueError, match=r"the spectrograms of 822000 clips need about 1048576.00 GiB on disk in"):
        check_disk_space(str(tmp_path), 2**50, "the spectrograms of 822000 clips")


def test_folder_of_tracks_is_cut_into_segments_and_silent_segments_are_counted(tmp_path):
    # 25 s track: 10 + 10 + 5 s (the 5 s tail is longer than a crop, so it is a clip); 21 s track: 10 + 11 s (its 1 s
    # tail joins the last segment); 4 s clip: one segment; a track that is silent after 10 s: one silent segment.
    sf.write(tmp_path / "long.wav", tone(25.0, 220), SR)
    sf.write(tmp_path / "medium.flac", tone(21.0, 330), SR)
    sf.write(tmp_path / "short.wav", tone(4.0, 440), SR)
    sf.write(tmp_path / "fade.wav", np.concatenate([tone(10.0, 550), np.zeros(10 * SR, np.float32)]), SR)
    clips = folder_clips(str(tmp_path), segment_seconds=10.0, min_seconds=95 * 512 / SR)
    assert clips["id"] == ["fade.wav#0", "fade.wav#1", "long.wav#0", "long.wav#1", "long.wav#2", "medium.flac#0",
                           "medium.flac#1", "short.wav"]
    assert clips["offset"] == [0.0, 10.0, 0.0, 10.0, 20.0, 0.0, 10.0, 0.0]
    assert clips["duration"] == [10.0, None, 10.0, 10.0, None, 10.0, None, None]
    skipped = SkipReport()
    spectrograms = compute_spectrograms(clips, MynaFeatureExtractor(), 96, skipped, batch_size=3)
    assert skipped.counts == {"silent": 1} and skipped.examples["silent"] == "fade.wav#1"
    frames = dict(zip(spectrograms["id"], spectrograms["num_frames"]))
    assert frames["long.wav#0"] == frames["long.wav#1"] == 10 * SR // 512 + 1
    assert frames["long.wav#2"] == 5 * SR // 512 + 1 and frames["medium.flac#1"] == 11 * SR // 512 + 1
    # A segment is the same audio as the slice of its file.
    whole = MynaFeatureExtractor()(tone(25.0, 220)[10 * SR : 20 * SR], sampling_rate=SR, chunk=False,
                                   return_tensors="pt")["input_values"][0]
    stored = spectrograms.with_format("numpy")[spectrograms["id"].index("long.wav#1")]["spectrogram"]
    torch.testing.assert_close(decode_spectrograms(stored, bfloat16=False), whole, rtol=1e-3, atol=1e-2)  # batched
    assert len(folder_clips(str(tmp_path))) == 4  # without segment_seconds: one clip per file


@pytest.mark.gpu
def test_out_of_core_crops_reach_the_gpu_equal_to_resident_gpu_crops(tmp_path):
    from myna_training.data import BatchPlan, CropPrefetcher, SpectrogramStore

    store = SpectrogramStore.write(random_spectrogram_dataset([313, 200, 96, 150] * 16), str(tmp_path / "s"), SkipReport())
    resident = store.bank("cuda", resident=True)
    plan = BatchPlan(store.num_frames, global_batch=16, crop_frames=96, seed=0)
    prefetcher = CropPrefetcher(store.bank("cuda", resident=False), plan, slice(0, 16), "cuda", depth=2)
    for micro in range(8):  # more batches than pinned buffers: buffers are reused only after their copy
        index, first, second = plan(micro)
        view1, view2, got = prefetcher.next()
        assert view1.device.type == "cuda" and torch.equal(got, index)
        offsets = resident.host_offsets[index]
        assert torch.equal(view1, resident.crops(offsets + first, 96))
        assert torch.equal(view2, resident.crops(offsets + second, 96))
    prefetcher.close()


def test_a_streamed_clip_with_non_finite_frames_stops_training_naming_it():
    from myna_training.data import NonFiniteCropError, StreamingSpectrograms

    dataset = random_spectrogram_dataset([200, 150, 313, 120], storage_dtype="float32")
    spectrograms = [np.asarray(s, np.float32) for s in dataset["spectrogram"]]
    spectrograms[2][50, 3] = np.nan
    poisoned = dataset.remove_columns("spectrogram").add_column("spectrogram", [s.tolist() for s in spectrograms])
    stream = poisoned.add_column("skip_reason", [""] * 4).to_iterable_dataset()
    streamed = StreamingSpectrograms(stream, batch_size=4, device="cpu", storage_dtype="float32", shuffle_buffer_size=0)
    with pytest.raises(NonFiniteCropError, match=r"clip 'clip2' \(index 2 of the stream\) has NaN or inf"):
        streamed.next_batch(96, torch.Generator().manual_seed(0))


def test_prefetcher_slot_logic_with_the_device_copy_stubbed(tmp_path):
    # The GPU path of CropPrefetcher on a CPU: host buffers reused in slots, an asynchronous copy per batch. The
    # stubbed copy completes only when its event is synchronized (by the prefetcher, before it refills the slot) or
    # at the very end, as a device copy may finish any time after the consumer's stream was told to wait for it:
    # a slot refilled before its copy completed hands out another batch's crops. Checked: order, slot reuse, no
    # partial batch at an epoch's end (10 clips, global batch 4: 2 batches an epoch, 2 clips left over), and a
    # close while the thread is blocked on a full queue.
    import threading

    from myna_training.data import BatchPlan, CropPrefetcher, SpectrogramStore

    num_frames = [313, 96, 200, 150, 313, 97, 120, 313, 250, 99]
    store = SpectrogramStore.write(random_spectrogram_dataset(num_frames), str(tmp_path / "store"), SkipReport())
    resident, bank = store.bank("cpu", resident=True), store.bank("cpu", resident=False)
    plan = BatchPlan(store.num_frames, global_batch=4, crop_frames=96, seed=3)
    log, lock = [], threading.Lock()

    class LazyCopy:
        def __init__(self, slot, host):
            self.slot, self.host, self.device = slot, host, None

        def synchronize(self):  # the copy completes now: it reads the host buffer as it is at this moment
            if self.device is None:
                self.device = [h.clone() for h in self.host]
                with lock:
                    log.append(("copied", self.slot))

    class StubbedPrefetcher(CropPrefetcher):
        staged = True  # the GPU path's slots and copies, on the CPU

        def _new_buffer(self, shape):
            return torch.empty(shape, dtype=self.bank.dtype)

        def _start_copy(self, views):
            slot = next(i for i, b in enumerate(self.buffers) if b[0].data_ptr() == views[0].data_ptr())
            with lock:
                log.append(("filled", slot))
            event = LazyCopy(slot, views)
            return [event, event], event  # the "device views": the event's copy, made when it completes

        def _wait_copy(self, views, event):
            pass  # the consumer's stream would wait on the device: nothing happens on the host

    rows = slice(2, 4)  # rank 1 of 2
    prefetcher = StubbedPrefetcher(bank, plan, rows, "cpu", start=1, depth=2)
    assert len(prefetcher.buffers) == 4 and prefetcher.buffers[0][0].shape == (2 * 96, 128)
    received = [prefetcher.next() for _ in range(7)]  # micro-batches 1-7: epochs 0-3
    time.sleep(0.2)  # the thread fills what the queue holds, then blocks
    started = time.perf_counter()
    prefetcher.close()  # blocked on a full queue: close ends it
    assert not prefetcher.thread.is_alive() and time.perf_counter() - started < 5
    for micro, (event, _, index) in enumerate(received, start=1):
        event.synchronize()  # the copies still pending complete now
        view1, view2 = event.device
        expected_index, first, second = (t[rows] for t in plan(micro))
        assert torch.equal(index, expected_index), micro
        offsets = resident.host_offsets[index]
        assert view1.shape == view2.shape == (2, 128, 96)  # never a partial batch
        assert torch.equal(view1, resident.crops(offsets + first, 96)), f"micro-batch {micro}: another batch's crops"
        assert torch.equal(view2, resident.crops(offsets + second, 96)), f"micro-batch {micro}: another batch's crops"
    assert plan.batches_per_epoch == 2
    # Slots are used in turn, and each is refilled only after the copy out of it has completed.
    fills = [slot for what, slot in log if what == "filled"]
    assert fills[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    for position, (what, slot) in enumerate(log):
        if what == "filled":
            earlier = [e for e in log[:position] if e[1] == slot]
            assert not earlier or earlier[-1][0] == "copied", f"slot {slot} refilled before its copy completed"


def test_spectrogram_progress_in_a_log_is_plain_lines_without_carriage_returns(messy_folder, monkeypatch, capsys):
    # stderr captured, as in a log file or `make demo | tee`: datasets' bar would redraw itself with "\r".
    monkeypatch.setenv("MYNA_PROGRESS_INTERVAL", "0")  # a line per update, so the lines between show too
    clips = folder_clips(str(messy_folder))
    compute_spectrograms(clips, MynaFeatureExtractor(), 96, SkipReport(), batch_size=2, num_proc=2)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err, repr(err[-500:])
    lines = [line for line in err.splitlines() if line.startswith("Spectrograms (num_proc=2): ")]
    assert lines and re.fullmatch(
        r"Spectrograms \(num_proc=2\): 8/8 clips \(100%\), \d+s elapsed, ETA 0s \[[\d.]+ clips/s\]", lines[-1]
    ), err
    counts = [int(re.match(r"Spectrograms \(num_proc=2\): (\d+)/8", line).group(1)) for line in lines]
    assert counts == sorted(counts) and counts[-1] == 8
    # The bar module's own class is back after the call.
    from datasets import arrow_dataset
    from datasets.utils import tqdm as datasets_tqdm

    assert arrow_dataset.hf_tqdm is datasets_tqdm


@pytest.mark.parametrize("placement", ["resident", "out_of_core"])
def test_only_the_local_main_process_reads_the_store_for_its_checksum(tmp_path, placement):
    # A run of N processes on a machine used to read the whole of frames.bin N times to check it. The other processes
    # learn the outcome from the local main process (tests/test_training_pretrain.py runs two).
    import contextlib
    from types import SimpleNamespace

    from myna_training.data import DamagedStoreError, SpectrogramStore
    from myna_training.pretrain_data import Clips, load_training_data

    store_dir = tmp_path / "spectrograms-abc"
    SpectrogramStore.write(random_spectrogram_dataset([313, 96, 200, 150]), str(store_dir), SkipReport())
    damage(store_dir, "bit-flipped", "bfloat16")  # same size, finite: only the checksum tells
    data_args = SimpleNamespace(streaming=False, cache_dir=str(tmp_path), spectrogram_placement=placement,
                                num_views=2, max_crop_distance=None)
    training_args = SimpleNamespace(per_device_batch_size=2, seed=0, output_dir=str(tmp_path), loss="sogclr")

    def load(local_main: bool):
        accelerator = SimpleNamespace(num_processes=1, process_index=0, is_main_process=True, device=torch.device("cpu"),
                                      is_local_main_process=local_main, print=lambda *a, **k: None,
                                      main_process_first=contextlib.nullcontext)
        clips = Clips(dataset=None, index_size=4, skipped=SkipReport())
        return load_training_data(accelerator, clips, "abc", 96, None, data_args, training_args)

    other = load(local_main=False)
    assert other.verifier is None and other.num_clips == 4  # no checksum, no background reading
    other.finish()
    with pytest.raises(DamagedStoreError, match="checksum of frames.bin"):
        local_main = load(local_main=True)  # resident: checked while the whole file is read
        assert local_main.verifier is not None
        local_main.finish()  # out-of-core: checked by the background thread
