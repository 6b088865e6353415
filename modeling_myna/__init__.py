"""Myna for transformers: configuration, models, feature extractor and their Auto-class registration.

Importing this package registers `model_type="myna"` with `AutoConfig`, `AutoModel`,
`AutoModelForAudioClassification` and `AutoFeatureExtractor`, and marks the classes so that `save_pretrained`
writes `auto_map` and copies this code: a folder saved here loads elsewhere with `trust_remote_code=True`. It also
registers the `music-embedding` pipeline of `myna_pipelines` (the last lines: the floor plan's one exception).

This is the ground floor of the project: it imports no other package of it, apart from that registration.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
)

from .configuration_myna import SAMPLING_RATE, VARIANTS, MynaConfig
from .data_collator_myna import MynaDataCollatorForAudioClassification
from .feature_extraction_myna import MynaFeatureExtractor
from .mel import MynaMelSpectrogram
from .modeling_myna import (
    MynaContrastiveOutput,
    MynaForAudioClassification,
    MynaForContrastivePretraining,
    MynaModel,
    MynaModelOutput,
    MynaPreTrainedModel,
    pool_chunks,
)


AutoConfig.register(MynaConfig.model_type, MynaConfig, exist_ok=True)
AutoModel.register(MynaConfig, MynaModel, exist_ok=True)
AutoModelForAudioClassification.register(MynaConfig, MynaForAudioClassification, exist_ok=True)
AutoModelForPreTraining.register(MynaConfig, MynaForContrastivePretraining, exist_ok=True)
AutoFeatureExtractor.register(MynaConfig, MynaFeatureExtractor, exist_ok=True)

MynaConfig.register_for_auto_class()
MynaModel.register_for_auto_class("AutoModel")
MynaForAudioClassification.register_for_auto_class("AutoModelForAudioClassification")
MynaForContrastivePretraining.register_for_auto_class("AutoModelForPreTraining")
MynaFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

# The one import of this package that runs upward (docs/architecture.md; REGISTRATION_HOOK in
# tests/test_imports.py), kept last. The pipelines live in `myna_pipelines`, of the same distribution; importing its
# `music_embedding` module registers the "music-embedding" task with `transformers.pipeline`, so that `import
# modeling_myna` is all a user needs. transformers registers a pipeline by its class, hence an import here and not
# a lazy entry. A trust_remote_code copy of a model folder has no package `__init__`, so this never runs there; an
# install without the pipelines package skips it.
try:
    import myna_pipelines.music_embedding  # noqa: E402, F401
except ModuleNotFoundError as error:
    if error.name not in ("myna_pipelines", "myna_pipelines.music_embedding"):
        raise

__all__ = [
    "SAMPLING_RATE",
    "VARIANTS",
    "MynaConfig",
    "MynaContrastiveOutput",
    "MynaDataCollatorForAudioClassification",
    "MynaFeatureExtractor",
    "MynaForAudioClassification",
    "MynaForContrastivePretraining",
    "MynaMelSpectrogram",
    "MynaModel",
    "MynaModelOutput",
    "MynaPreTrainedModel",
    "pool_chunks",
]
