"""transformers' ModelTesterMixin run against Myna (square and hybrid); see run.py next to this file."""

import unittest

import torch
from torch import nn

import modeling_myna  # noqa: F401
from modeling_myna import MynaConfig, MynaForAudioClassification, MynaForContrastivePretraining, MynaModel
from transformers.models.auto import modeling_auto

from ..test_modeling_common import ModelTesterMixin, floats_tensor


# Mapped like a built-in model, so the mixins know the bare model from the head (and give the head labels).
modeling_auto.MODEL_MAPPING_NAMES["myna"] = "MynaModel"
modeling_auto.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES["myna"] = "MynaForAudioClassification"


class MynaModelTester:
    def __init__(self, parent, variant):
        self.parent, self.variant = parent, variant
        self.batch_size = 2
        self.num_hidden_layers = 2
        self.num_attention_heads = 2
        self.hidden_size = 32
        self.is_training = True
        self.frames = 32
        self.seq_length = 8 * 2 + (16 if variant == "hybrid" else 0)
        self.encoder_seq_length = self.seq_length
        # Eager-vs-SDPA builds noise of (image_size // patch_size) ** 2 = 16 tokens: the tokens of one tokenizer of a
        # 32-frame chunk (8 x 2 square, 1 x 16 vertical); _prepare_for_class gives a hybrid one per tokenizer.
        self.image_size, self.patch_size = 4, 1

    def get_config(self):
        return MynaConfig.from_variant(
            self.variant, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
            intermediate_size=64, projection_dim=8, num_labels=3, chunk_frames=32,
        )

    def prepare_config_and_inputs_for_common(self):
        return self.get_config(), {"input_values": floats_tensor([self.batch_size, 128, self.frames]) * 100}


class _Common(ModelTesterMixin):
    all_model_classes = (MynaModel, MynaForAudioClassification)  # the contrastive head returns no per-layer outputs
    pipeline_model_mapping = {}
    test_resize_embeddings = False
    has_attentions = True
    variant = "base"

    def setUp(self):
        self.model_tester = MynaModelTester(self, self.variant)

    def test_model_get_set_embeddings(self):  # as ViT's tests: the input embeddings are a patch tokenizer
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings(), nn.Module)
            self.assertIsNone(model.get_output_embeddings())

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        noise = inputs_dict.get("noise")
        if self.variant == "hybrid" and isinstance(noise, torch.Tensor):
            # The mixins build one noise tensor, sized from image_size and patch_size (16 tokens here); a hybrid's
            # "both" takes one per tokenizer (16 square and 16 vertical tokens of a 32-frame chunk).
            inputs_dict = {**inputs_dict, "noise": [noise, noise.flip(-1)]}
        if model_class is MynaForContrastivePretraining:
            inputs_dict = dict(inputs_dict)
            values = inputs_dict.pop("input_values")
            dropped = ("output_hidden_states", "output_attentions", "labels")
            inputs_dict = {k: v for k, v in inputs_dict.items() if k not in dropped}
            inputs_dict["views"] = [values, values.flip(0)]
            inputs_dict["mask_ratio"] = 0.0
        if model_class is MynaForAudioClassification and return_labels:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict


class MynaSquareTest(_Common, unittest.TestCase):
    variant = "base"


class MynaHybridTest(_Common, unittest.TestCase):
    variant = "hybrid"
