"""Which crops each pre-training step uses, and getting them there ahead of the step. `BatchPlan` draws the clips and
the crop starts (two views per clip, or `num_views`) of every micro-batch as a pure function of `(seed, micro-batch)`
for the whole global batch (`epoch_order`, `crop_generator`, `random_crop_starts`), so that every placement of the
spectrograms and any number of processes train on exactly the same crops. `CropPrefetcher` reads the upcoming
micro-batches' crops from an out-of-core bank in a background thread, into pinned buffers that it copies to the
device on a side stream. Banks are known here only by what they offer (`host_offsets`, `crops`), so
`spectrogram_store` builds on this module and not the reverse.
"""

import torch


def random_crop_starts(
    num_frames: torch.Tensor,
    crop_frames: int,
    generator: torch.Generator,
    max_distance: int | None = None,
    num_views: int = 2,
) -> tuple[torch.Tensor, ...]:
    """`num_views` (two by default) independent uniform crop starts per clip, `(B,)` each, in
    `[0, num_frames - crop_frames]`.

    With `max_distance`, every start after the first is drawn uniformly among the valid starts within `max_distance`
    frames of the first (the reference code's option). The first two views are the same draws whatever `num_views`.
    """
    if num_views < 2:
        raise ValueError(f"num_views={num_views}: a contrastive pair needs at least two views per clip.")
    device = num_frames.device
    room = (num_frames - crop_frames + 1).clamp(min=1).to(torch.float64)  # valid start positions per clip
    uniform = torch.rand((num_views, num_frames.shape[0]), generator=generator, device=device, dtype=torch.float64)
    first = (uniform[0] * room).long()
    if max_distance is None:
        others = [(u * room).long() for u in uniform[1:]]
    else:
        low = (first - max_distance).clamp(min=0)
        high = torch.minimum(first + max_distance, room.long() - 1)
        others = [low + (u * (high - low + 1).to(torch.float64)).long() for u in uniform[1:]]
    return (first, *others)


def epoch_order(num_clips: int, seed: int, epoch: int) -> torch.Tensor:
    """The clip order of `epoch`: a permutation that depends only on `(seed, epoch)`."""
    return torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def crop_generator(seed: int, micro_batch: int) -> torch.Generator:
    """The CPU generator of one micro-batch's crop starts (the mask noise has its own stream, on the device)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + micro_batch) * 2 + 1)


class NonFiniteCropError(ValueError):
    """A training crop holding NaN or inf: the run stops before it reaches the loss."""


def check_finite_crops(view: torch.Tensor, index: torch.Tensor, starts: torch.Tensor, where: str) -> None:
    """Raises `NonFiniteCropError` naming the clip when a `(B, F, crop)` host `view` holds NaN or inf.

    One float32 sum of the view (NaN and inf propagate; finite power mels cannot overflow it) decides; only a
    non-finite sum pays for finding the row. `index` and `starts` are the clips and crop starts of the view's rows;
    `where` says what to do about it.
    """
    if torch.isfinite(view.sum(dtype=torch.float32)):
        return
    bad = (~torch.isfinite(view.float())).flatten(1).any(1).nonzero().flatten()
    row = int(bad[0]) if bad.numel() else 0
    raise NonFiniteCropError(
        f"the crop of clip {int(index[row])} (frames {int(starts[row])}-{int(starts[row]) + view.shape[-1]} of the "
        f"clip) holds NaN or inf values{f', and {bad.numel() - 1} more crop(s) of this batch' if bad.numel() > 1 else ''}"
        f": training stopped before they reach the loss. {where}"
    )


class BatchPlan:
    """Which clips and crop starts micro-batch `m` uses: a pure function of `(seed, m)` for the whole global batch.

    Every placement of the spectrograms (a device-resident bank, the store on disk read by a background thread)
    and any number of processes follow the same plan, so they train on exactly the same crops.
    """

    def __init__(
        self,
        num_frames: torch.Tensor,
        global_batch: int,
        crop_frames: int,
        seed: int,
        max_distance=None,
        num_views: int = 2,
    ):
        self.num_frames = num_frames.cpu()
        self.num_views = num_views
        self.global_batch = global_batch
        self.crop_frames = crop_frames
        self.seed = seed
        self.max_distance = max_distance
        self.batches_per_epoch = len(self.num_frames) // global_batch
        self._order, self._order_epoch = None, None

    def __call__(self, micro_batch: int) -> tuple[torch.Tensor, ...]:
        """`(index, first, second, ...)`, `(global_batch,)` CPU tensors: clip indices and the starts of their
        `num_views` views."""
        epoch, position = divmod(micro_batch, self.batches_per_epoch)
        if self._order_epoch != epoch:
            self._order, self._order_epoch = epoch_order(len(self.num_frames), self.seed, epoch), epoch
        index = self._order[position * self.global_batch : (position + 1) * self.global_batch]
        starts = random_crop_starts(
            self.num_frames[index], self.crop_frames, crop_generator(self.seed, micro_batch), self.max_distance,
            self.num_views,
        )
        return (index, *starts)


class CropPrefetcher:
    """Reads upcoming micro-batches' crops from an out-of-core bank in a background thread.

    The thread follows `plan` from micro-batch `start`, reads this process's rows of each batch (`rows`, a slice of
    the global batch) from the store's file into pinned host buffers and, on a GPU, starts their copy to the
    device on a side stream, so that disk reads and host-to-device copies overlap the training step. `next()` returns
    `(view1, view2, ..., index)` (the plan's `num_views` views) in order; the consumer's stream waits for the copy
    on the device, not on the host.

    Staged copies (a GPU) cycle through `depth + 2` slots of `num_views` host buffers: `depth` batches queued, one
    being used, one being filled. A slot is refilled only after the copy out of it has finished (its event). The three
    device-specific steps are methods (`_new_buffer`, `_start_copy`, `_wait_copy`), so that this logic is tested on
    a CPU with the copy stubbed (tests/test_training_data.py).
    """

    def __init__(
        self, bank, plan: BatchPlan, rows: slice, device, start: int = 0, depth: int = 2, check_finite: str | None = None
    ):
        import queue
        import threading

        self.bank, self.plan, self.rows = bank, plan, rows
        self.check_finite = check_finite  # what to tell the user about a non-finite crop; None: no check
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.device.index is None:  # "cuda": the current device, named, for the filling thread
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.queue = queue.Queue(maxsize=depth)
        local = len(range(*rows.indices(plan.global_batch)))
        shape = (local * plan.crop_frames, bank.num_mel_bins)
        # `num_views` views per batch; `depth` batches queued, one being filled and one being used.
        self.buffers = [
            [self._new_buffer(shape) for _ in range(plan.num_views)] for _ in range(depth + 2 if self.staged else 0)
        ]
        self.copied = [None] * max(len(self.buffers), 1)  # the event after which a buffer may be refilled
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(start,), daemon=True, name="myna-crop-prefetch")
        self.thread.start()

    @property
    def staged(self) -> bool:
        """Whether crops go through reused host buffers and an asynchronous copy (a GPU), or are used as read."""
        return self.cuda

    def _new_buffer(self, shape) -> torch.Tensor:
        return torch.empty(shape, dtype=self.bank.dtype, pin_memory=True)

    def _start_copy(self, views: list[torch.Tensor]):
        """Starts copying the host `views` to the device; returns `(device views, event)`, the event marking the end
        of the copy (`.synchronize()` waits for it on the host)."""
        with torch.cuda.stream(self.stream):
            views = [v.to(self.device, non_blocking=True) for v in views]
            event = torch.cuda.Event()
            event.record(self.stream)
        return views, event

    def _wait_copy(self, views: list[torch.Tensor], event) -> None:
        """Makes the consumer's stream wait for the copy (on the device, not the host)."""
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(event)
        for view in views:
            view.record_stream(stream)

    def _fill(self, micro_batch: int) -> None:
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            slot = 0
            while not self._stop.is_set():
                index, *starts = self.plan(micro_batch)
                index, starts = index[self.rows], [s[self.rows] for s in starts]
                offsets = self.bank.host_offsets[index]
                if self.copied[slot] is not None:
                    self.copied[slot].synchronize()  # the last copy out of this buffer is done
                buffers = self.buffers[slot] if self.staged else [None] * len(starts)
                views = [self.bank.crops(offsets + s, self.plan.crop_frames, out=b) for s, b in zip(starts, buffers)]
                if self.check_finite is not None:  # on the host copy, in this thread: no device sync in the step
                    for view, view_starts in zip(views, starts):
                        check_finite_crops(view, index, view_starts, self.check_finite)
                event = None
                if self.staged:
                    views, event = self._start_copy(views)
                    self.copied[slot] = event
                self._put((views, index, event))
                micro_batch += 1
                slot = (slot + 1) % len(self.copied)
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(error)

    def _put(self, item) -> None:
        import queue

        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[torch.Tensor, ...]:
        item = self.queue.get()
        if isinstance(item, ValueError):  # a damaged store or a non-finite crop: already one clear line
            raise item
        if isinstance(item, BaseException):
            raise RuntimeError(f"reading crops from the spectrogram store failed: {item}") from item
        views, index, event = item
        if event is not None:
            self._wait_copy(views, event)
        return (*views, index)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


__all__ = [
    "BatchPlan",
    "CropPrefetcher",
    "NonFiniteCropError",
    "check_finite_crops",
    "crop_generator",
    "epoch_order",
    "random_crop_starts",
]
