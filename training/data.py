"""Pre-training data, importable from here with every name it always had; the code lives in four modules, one per
subject, each importing only those listed before it:

- `audio_sources`: where clips come from (the generated corpus, a folder of audio, AudioSet) and `SkipReport`;
- `spectrograms`: each clip's spectrogram computed once and cached as Arrow, and the stored row format;
- `batch_plan`: which clips and crops every micro-batch uses, and the prefetcher of out-of-core crops;
- `spectrogram_store`: the store folder, resident and out-of-core banks, the placement decision, streamed sets.
"""

from myna_training.audio_sources import (  # noqa: F401
    MUSIC_ID,
    MUSIC_IDS_FILE,
    SkipReport,
    audioset_csv_clips,
    audioset_hub_clips,
    audioset_music_ids,
    folder_clips,
    load_clips,
    read_segments_csv,
    synthetic_clips,
)
from myna_training.batch_plan import (  # noqa: F401
    BatchPlan,
    CropPrefetcher,
    NonFiniteCropError,
    check_finite_crops,
    crop_generator,
    epoch_order,
    random_crop_starts,
)
from myna_training.spectrogram_store import (  # noqa: F401
    PLACEMENTS,
    RESIDENT_MEMORY_FRACTION,
    STORE_FORMAT,
    DamagedStoreError,
    DiskSpectrogramBank,
    SpectrogramBank,
    SpectrogramStore,
    StoreVerifier,
    StreamingSpectrograms,
    check_disk_space,
    choose_placement,
    free_memory,
    gather_crops,
    gib,
    iter_stored_spectrograms,
    stored_to_tensor,
)
from myna_training.spectrograms import (  # noqa: F401
    SILENCE_THRESHOLD,
    STORAGE_DTYPES,
    cache_key,
    compute_spectrograms,
    decode_spectrograms,
    encode_spectrogram,
    make_spectrogram_function,
    spectrogram_features,
)


__all__ = [
    "MUSIC_ID",
    "PLACEMENTS",
    "BatchPlan",
    "CropPrefetcher",
    "DamagedStoreError",
    "DiskSpectrogramBank",
    "NonFiniteCropError",
    "SkipReport",
    "SpectrogramBank",
    "SpectrogramStore",
    "StoreVerifier",
    "StreamingSpectrograms",
    "audioset_music_ids",
    "choose_placement",
    "compute_spectrograms",
    "crop_generator",
    "epoch_order",
    "gather_crops",
    "load_clips",
    "random_crop_starts",
    "read_segments_csv",
]
