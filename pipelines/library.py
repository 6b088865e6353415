"""`myna embed DIR --output store/`: a music library into a resumable embedding store, on CPUs or several GPUs.

    myna embed music/ --model myna-hybrid --output store/                    # one row per track
    myna embed music/ --model myna-hybrid --output store/ --timeline         # + the 3 s chunk embeddings
    myna embed music/ --model myna-hybrid --output store/ --precision int8   # CPU: 8-bit linear layers
    torchrun --nproc_per_node 4 -m myna_pipelines.cli embed music/ --model myna-hybrid --output store/
    accelerate launch -m myna_pipelines.cli embed music/ --model myna-hybrid --output store/

Decoding, resampling and the mel front end run in `--num_workers` worker processes (a `torch.utils.data`
DataLoader), ahead of the model, which takes chunks from several files into each batch of `--batch_size`. Rows are
written in shards of `--shard_size` files (see `store.py`), so a killed run loses at most one shard of work and the
next run skips what is done. Unreadable files, and files shorter than one chunk (`query_rules.py`), are recorded
with the reason in `.myna/errors-*.jsonl`, listed at the end, and not decoded again. Under `torchrun` or
`accelerate launch` (the `WORLD_SIZE` / `RANK` environment), each process embeds every `WORLD_SIZE`-th file of the
sorted list into the same store on `cuda:LOCAL_RANK` (or the CPU), and the first process compacts the store once all
have finished; the store is the same as one process writes. A decoding worker runs on one thread, torch's and the
decoder's (`_worker_init`): the model's threads keep the cores.
"""

import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from modeling_myna.audio_utils import AudioDecodeError, open_audio
from myna_common.cli_support import audio_files_in, check_model_name, check_output_folder, plural
from myna_common.progress import progress_bar, transformers_bars_off

from .arguments import EmbedArguments, LibraryArguments, check_output_outside_inputs, embed_parser, find_audio_files
from .onnx_backend import inference_model
from .precision import PRECISIONS, MynaInferenceModel
from .query_rules import QueryTooShortError, check_query_length, shortest_query_seconds
from .store import EmbeddingStore, content_hash, settings_key
from .streaming import AudioSegment, open_stream, segment_chunks, stream_segments


# ------------------------------------------------------------------------------------------------ model identity


def model_fingerprint(model) -> str:
    """BLAKE2b of the encoder's configuration and weights: what must match for two embeddings to be comparable."""
    import hashlib

    encoder = model.base_model
    digest = hashlib.blake2b(digest_size=16)
    config = encoder.config.to_dict()
    keep = ("patch_sizes", "patch_modes", "hidden_size", "num_hidden_layers", "num_attention_heads", "chunk_frames")
    digest.update(json.dumps({k: config.get(k) for k in keep}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def front_end_settings(feature_extractor) -> dict[str, Any]:
    """Everything of the feature extractor that changes the spectrogram a model sees, hence the embeddings: the
    sampling rate, STFT hop and size, mel bins and backend, chunk width and hop, padding value. Part of a store's
    settings key, so that one store never mixes embeddings of two front ends."""
    return {
        "sampling_rate": int(feature_extractor.sampling_rate),
        "hop_length": int(feature_extractor.hop_length),
        "n_fft": int(feature_extractor.n_fft),
        "num_mel_bins": int(feature_extractor.feature_size),
        "mel_backend": feature_extractor.mel_backend,
        "chunk_frames": int(feature_extractor.chunk_frames),
        "hop_frames": feature_extractor.hop_frames,
        "padding_value": float(feature_extractor.padding_value),
    }


def load_model(model_id: str, device: str, dtype: str = "float32"):
    """`(model, feature_extractor)` of a Myna folder or Hub id; transformers' "Loading weights" bar stays off
    (a library call, in a service or a notebook, prints nothing of its own), and is as it was afterwards."""
    import modeling_myna  # noqa: F401  (registers Myna with the Auto classes)
    from modeling_myna import MynaFeatureExtractor
    from transformers import AutoModel

    with transformers_bars_off():
        model = AutoModel.from_pretrained(model_id, dtype=getattr(torch, dtype)).to(device).eval()
    try:
        feature_extractor = MynaFeatureExtractor.from_pretrained(model_id)
    except OSError:  # a folder without preprocessor_config.json
        feature_extractor = MynaFeatureExtractor.from_config(model.config)
    return model, feature_extractor


# ------------------------------------------------------------------------------------------------ decoding


class _LibraryFiles(torch.utils.data.IterableDataset):
    """Decoded files as a stream of items: `segment` (chunk spectrograms, or samples when the model is not on the
    CPU), `error` (an unreadable file, with the reason) and `too_short` (a file shorter than one chunk, with the
    rule's sentence). Worker `w` of `n` takes files `w, w + n, ...`."""

    def __init__(self, files: list[str], feature_extractor, segment_chunks_: int, spectrograms: bool):
        self.files, self.feature_extractor = files, feature_extractor
        self.segment_chunks, self.spectrograms = segment_chunks_, spectrograms
        self.shortest = shortest_query_seconds(feature_extractor)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        files = self.files if info is None else self.files[info.id :: info.num_workers]
        for path in files:
            yield from self._file_items(path)

    def _file_items(self, path: str) -> Iterator[dict[str, Any]]:
        try:
            stat = os.stat(path)
            header = {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        except OSError as error:
            yield {"kind": "error", "path": path, "size": -1, "mtime_ns": -1, "error": f"{path}: {error.strerror}"}
            return
        try:
            header["content_hash"] = content_hash(path)
            # The one call down to decoding: it opens the file (the duration is its header's) and then reads,
            # resamples and checks it block by block; every error's message is the one the store records.
            with open_audio(path, self.feature_extractor.sampling_rate) as audio:
                header["duration"] = audio.duration
                if audio.duration > 0:  # 0: an empty recording, which decoding words
                    check_query_length(audio.duration, path, self.shortest, use="an embedding")
                for segment in stream_segments(audio, self.feature_extractor, self.segment_chunks):
                    item = {**header, "kind": "segment", "is_last": segment.is_last}
                    item["start_frames"] = torch.as_tensor(segment.chunk_start_frames())
                    if self.spectrograms:
                        item["chunks"] = segment_chunks(segment, self.feature_extractor)
                    else:
                        item["segment"] = {**vars(segment), "samples": torch.from_numpy(segment.samples)}
                    yield item
        except QueryTooShortError as error:
            yield {**header, "kind": "too_short", "error": str(error)}
        except (AudioDecodeError, OSError) as error:
            yield {**header, "kind": "error", "error": str(error)}


def _worker_init(_):
    """A decoding worker runs on one thread, end to end: torch's (the mel) and the decoder's (a long FLAC would
    otherwise decode in `decode_threads()` pieces at once, up to 4 per worker). The model's threads keep the cores."""
    torch.set_num_threads(1)
    os.environ["MYNA_DECODE_THREADS"] = "1"  # this worker's environment only: modeling_myna.audio_utils reads it


# ------------------------------------------------------------------------------------------------ embedding


def embed_chunks(
    source: Any,
    inference: MynaInferenceModel,
    feature_extractor,
    patch_mode: str | None,
    batch_size: int = 32,
    use: str = "an embedding",
) -> tuple[np.ndarray, np.ndarray]:
    """One input's `(chunks, D)` chunk embeddings and `(chunks,)` start seconds, as the store computes them.

    Raises:
        QueryTooShortError: the input is shorter than one chunk (`query_rules.py`; `use` says what it was for).
    """
    audio = open_stream(source, feature_extractor)
    if audio.duration > 0:  # 0: an empty recording, which decoding words
        check_query_length(audio.duration, audio.name, shortest_query_seconds(feature_extractor), use=use)
    embeddings, starts = [], []
    for segment in stream_segments(audio, feature_extractor, batch_size):
        chunks = segment_chunks(segment, feature_extractor, device=inference.device)
        embeddings.append(inference.embed(chunks, patch_mode).cpu().numpy())
        starts.append(segment.chunk_start_frames())
    return np.concatenate(embeddings), feature_extractor.chunk_start_seconds(np.concatenate(starts))


def _distributed_context() -> tuple[int, int, int]:
    """`(rank, world_size, local_rank)` from the torchrun / accelerate environment; joins a gloo group if > 1."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not torch.distributed.is_initialized():
        from datetime import timedelta

        # gloo for the barriers only (no tensors are exchanged); a long timeout: ranks finish at different times.
        torch.distributed.init_process_group("gloo", timeout=timedelta(days=7))
    return rank, world_size, local_rank


def _barrier(world_size: int) -> None:
    if world_size > 1:
        torch.distributed.barrier()


def _todo(files: list[str], store: EmbeddingStore, key: str) -> tuple[list[str], int, int, list[str]]:
    """The files that need embedding, how many are skipped as done or as known to be unreadable, and those known to
    be shorter than one chunk."""
    states, errors = store.file_states(), store.errors()
    todo, done, unreadable, too_short = [], 0, 0, []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError:
            todo.append(path)  # reported as unreadable by the decoder
            continue
        state = states.get(path)
        if state is not None and state.settings_key == key:
            if (state.size, state.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                done += 1
                continue
            if state.size == stat.st_size and state.content_hash == content_hash(path):
                done += 1  # touched, not changed
                continue
        error = errors.get(path)
        if error is not None and error["settings_key"] == key and (error["size"], error["mtime_ns"]) == (
            stat.st_size,
            stat.st_mtime_ns,
        ):
            if error.get("too_short"):
                too_short.append(path)
            else:
                unreadable += 1
            continue
        todo.append(path)
    return todo, done, unreadable, too_short


class _Batcher:
    """Collects chunks of several files into batches of exactly `batch_size` and hands back finished files."""

    def __init__(self, model: MynaInferenceModel, batch_size: int, patch_mode: str | None):
        self.model, self.batch_size, self.patch_mode = model, batch_size, patch_mode
        self.queue: list[tuple[str, torch.Tensor]] = []  # (path, (n, F, T) chunks) not yet embedded
        self.queued = 0
        self.files: dict[str, dict[str, Any]] = {}  # path -> header, embeddings so far, chunks outstanding

    def add(self, item: dict[str, Any], chunks: torch.Tensor) -> None:
        entry = self.files.setdefault(item["path"], {"header": item, "embeddings": [], "starts": [], "outstanding": 0})
        entry["starts"].append(item["start_frames"])
        entry["outstanding"] += len(chunks)
        entry["complete"] = item["is_last"]
        self.queue.append((item["path"], chunks))
        self.queued += len(chunks)

    def run(self, final: bool = False) -> list[dict[str, Any]]:
        """Embeds full batches (and, with `final`, the remainder); returns the entries of finished files."""
        while self.queued >= self.batch_size or (final and self.queued):
            take, owners, parts = min(self.batch_size, self.queued), [], []
            while take:
                path, chunks = self.queue[0]
                n = min(take, len(chunks))
                parts.append(chunks[:n])
                owners.append((path, n))
                if n == len(chunks):
                    self.queue.pop(0)
                else:
                    self.queue[0] = (path, chunks[n:])
                take -= n
                self.queued -= n
            embeddings = self.model.embed(torch.cat(parts), self.patch_mode).cpu()
            for (path, n), rows in zip(owners, embeddings.split([n for _, n in owners])):
                self.files[path]["embeddings"].append(rows)
                self.files[path]["outstanding"] -= n
        finished = [p for p, e in self.files.items() if e.get("complete") and e["outstanding"] == 0]
        return [self.files.pop(p) for p in finished]


def embed_library(
    files: list[str],
    store_path: str,
    model_id: str,
    patch_mode: str | None = None,
    precision: str = "float32",
    timeline: bool = False,
    batch_size: int = 32,
    num_workers: int = 1,
    shard_size: int = 256,
    device: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    repair: bool = False,
    keep_memory: bool = False,
    backend: str = "pytorch",
) -> dict[str, Any]:
    """Embeds `files` (audio files, or folders searched recursively) into the store at `store_path`, skipping those
    already there; returns the run's counts. Files shorter than one chunk are skipped and listed (`too_short`),
    recorded with the reason as unreadable files are. `keep_memory`: see `MynaInferenceModel` (`myna embed` sets
    it; a library call leaves the process's malloc alone).

    In a torchrun / accelerate launch, every process calls this with the same arguments.
    """
    rank, world_size, local_rank = _distributed_context()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() and backend == "pytorch" else "cpu"
    store = EmbeddingStore(store_path)
    if audio_files_in(store_path):  # never into a folder of music, whatever the flags
        raise ValueError(f"{store_path} holds audio: a store is written into its own folder, never into music.")
    if overwrite and rank == 0:
        store.clear()  # the store's own data/ and .myna/, never anything else in the folder
    repaired = []
    if repair and not overwrite and rank == 0:
        repaired = store.repair()
        for path in repaired:
            print(f"--repair: set {path} aside in {os.path.join(store.meta_dir, 'damaged')}; its files are embedded "
                  "again", file=sys.stderr)
    _barrier(world_size)

    model, feature_extractor = load_model(model_id, device, dtype)
    patch_mode = patch_mode or model.config.default_patch_mode
    inference, checks = inference_model(
        model, precision, backend, model_id, feature_extractor, patch_mode, keep_memory=keep_memory
    )
    for check in checks if rank == 0 else ():
        print(f"{backend} {precision}: mean cosine {check['cosine']:.5f} to PyTorch float32 on generated music")
    fingerprint = model_fingerprint(model)
    settings = {
        "patch_mode": patch_mode,
        "precision": precision,
        "dtype": dtype,
        "timeline": timeline,
        "chunk_frames": feature_extractor.chunk_frames,
        "embedding_size": model.config.embedding_size(patch_mode),
        "front_end": front_end_settings(feature_extractor),
        **({"backend": backend} if backend != "pytorch" else {}),  # PyTorch stores keep their key
    }
    key = settings_key(fingerprint, settings)
    shown_id = os.path.abspath(model_id) if os.path.isdir(model_id) else model_id
    row_fields = {
        "model": shown_id, "model_fingerprint": fingerprint, "settings": json.dumps(settings, sort_keys=True),
        "settings_key": key,
    }  # fmt: skip

    existing = store.metadata()
    if existing and existing.get("settings_key") != key:
        raise ValueError(
            f"the store {store_path} holds embeddings of {existing.get('model')} with settings "
            f"{json.dumps(existing.get('settings'), sort_keys=True)}; this run asks for {shown_id} with "
            f"{json.dumps(settings, sort_keys=True)}. Write to another --output folder, or pass --overwrite to "
            "embed the library again into this one."
        )
    _barrier(world_size)  # every process has read the metadata before the first one writes it
    if rank == 0 and not existing:
        store.write_metadata({**row_fields, "settings": settings})

    files = sorted({os.path.abspath(f) for f in find_audio_files(files)})
    mine = files[rank::world_size]
    todo, done, known_bad, too_short = _todo(mine, store, key)

    dataset = _LibraryFiles(todo, feature_extractor, batch_size, spectrograms=torch.device(device).type == "cpu")
    workers = min(num_workers, len(todo))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=_worker_init,
        prefetch_factor=8 if workers else None,
    )
    batcher = _Batcher(inference, batch_size, patch_mode)
    rows, errors, counts = [], [], {"embedded": 0, "unreadable": 0, "audio_seconds": 0.0}
    bar = progress_bar(
        total=len(todo), desc="myna embed" if world_size == 1 else f"myna embed [{rank}]", unit="file",
        dynamic_ncols=True, disable=not progress or rank != 0,
    )  # fmt: skip
    started = time.perf_counter()

    def flush():
        if rows:
            store.write_shard(rows, rank)
        store.write_errors(errors, rank)
        rows.clear()
        errors.clear()

    def finish(entry):
        header = entry["header"]
        chunk_embeddings = torch.cat(entry["embeddings"]).numpy()
        starts = torch.cat(entry["starts"]).numpy()
        row = {
            "path": header["path"], "size": header["size"], "mtime_ns": header["mtime_ns"],
            "content_hash": header["content_hash"], "num_chunks": len(chunk_embeddings),
            "duration": header["duration"], "embedding": chunk_embeddings.mean(axis=0), "embedded_at": time.time(),
            **row_fields,
        }  # fmt: skip
        if timeline:
            row["timeline"] = chunk_embeddings
            row["start_times"] = feature_extractor.chunk_start_seconds(starts)
        rows.append(row)
        counts["embedded"] += 1
        counts["audio_seconds"] += row["duration"] if np.isfinite(row["duration"]) else 0.0
        bar.update(1)
        bar.set_postfix(audio_s_per_s=f"{counts['audio_seconds'] / (time.perf_counter() - started):.0f}")

    try:
        for item in loader:
            if item["kind"] in ("error", "too_short"):  # recorded alike: a re-run does not decode them again
                record = {k: item[k] for k in ("path", "size", "mtime_ns", "error")}
                record.update(settings_key=key, time=time.time())
                short = item["kind"] == "too_short"
                errors.append({**record, "too_short": True} if short else record)
                if short:
                    too_short.append(item["path"])
                else:
                    counts["unreadable"] += 1
                bar.write(f"{'skipped' if short else 'unreadable'}: {item['error']}", file=sys.stderr)
                bar.update(1)
                continue
            if "chunks" in item:
                chunks = item["chunks"]
            else:
                chunks = segment_chunks(AudioSegment(**item["segment"]), feature_extractor, device=device)
            batcher.add(item, chunks)
            for entry in batcher.run():
                finish(entry)
            if len(rows) >= shard_size:
                flush()
        for entry in batcher.run(final=True):
            finish(entry)
    finally:
        flush()  # also on Ctrl-C: what is embedded is kept
        bar.close()
    counts["seconds"] = time.perf_counter() - started

    _barrier(world_size)
    if rank == 0:
        store.compact()
        store.write_metadata({**row_fields, "settings": settings})
    _barrier(world_size)
    counts.update(
        skipped=done, known_unreadable=known_bad, too_short=sorted(too_short), shortest_seconds=dataset.shortest,
        files=len(mine), rank=rank, world_size=world_size, repaired=repaired,
    )  # fmt: skip
    return counts


def embed_library_command(argv: list[str]) -> int:
    """`myna embed ... --output FOLDER`: the store variant of `myna embed` (see the module docstring)."""
    from myna_common.cli_support import parse_into

    parser = embed_parser()
    args, library, positional = parse_into(parser, (EmbedArguments, LibraryArguments), argv)
    if args.batch_size < 1 or library.shard_size < 1 or library.num_workers < 0:
        parser.error("--batch_size and --shard_size must be at least 1, --num_workers at least 0.")
    if library.precision not in PRECISIONS:
        parser.error(f"--precision must be one of {PRECISIONS}.")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        parser.error(f"--output {args.output} is a file; a store is a folder (or use a .npz / .parquet name).")
    files = find_audio_files(positional.inputs)
    if not files:
        parser.error(f"no audio files in {' '.join(positional.inputs)}.")
    check_output_outside_inputs(args.output, positional.inputs, store=True)
    check_output_folder(args.output, overwrite=args.overwrite, own=EmbeddingStore.is_store, what="store")
    check_model_name(args.model)
    try:
        counts = embed_library(
            files, args.output, args.model, patch_mode=args.patch_mode, precision=library.precision,
            timeline=library.timeline or args.pooling == "none", batch_size=args.batch_size,
            num_workers=library.num_workers, shard_size=library.shard_size, device=args.device, dtype=args.dtype,
            overwrite=args.overwrite, repair=library.repair, keep_memory=True, backend=args.backend,
        )  # fmt: skip
    except (OSError, ValueError) as error:
        print(f"myna embed: {error}", file=sys.stderr)
        return 1
    if counts["rank"] == 0:
        seconds = max(counts["seconds"], 1e-9)
        share = f" (this process's share of {counts['world_size']})" if counts["world_size"] > 1 else ""
        if counts["embedded"] == 0 and counts["skipped"]:
            print(f"nothing new to embed{share}: {plural(counts['skipped'], 'file')} already in the store -> "
                  f"{args.output}")
        else:
            print(
                f"embedded {plural(counts['embedded'], 'file')} ({counts['audio_seconds']:.1f} s of audio) in "
                f"{seconds:.1f} s ({counts['embedded'] / seconds:.2f} files/s, {counts['audio_seconds'] / seconds:.1f} "
                f"audio s/s){share}; {counts['skipped']} already in the store -> {args.output}"
            )
        bad = counts["unreadable"] + counts["known_unreadable"]
        if bad:
            print(
                f"{plural(bad, 'unreadable file')}, listed with the reason in "
                f"{os.path.join(args.output, '.myna', 'errors-*.jsonl')}",
                file=sys.stderr,
            )
        if counts["too_short"]:
            print(
                f"skipped {plural(len(counts['too_short']), 'file')} shorter than one chunk "
                f"({counts['shortest_seconds']:.2f} s): {', '.join(counts['too_short'])}",
                file=sys.stderr,
            )
    return 0


__all__ = [
    "LibraryArguments",
    "embed_chunks",
    "embed_library",
    "embed_library_command",
    "load_model",
    "model_fingerprint",
]
