"""Is bfloat16 storage of the spectrograms exact enough? What storing power mels in bfloat16 changes, measured.

Computes the raw power mel spectrograms of generated music clips (myna_training.synthetic) in float32, rounds them
to bfloat16 as the spectrogram store keeps them, and reports:
- the relative rounding error of the stored values (bfloat16 keeps 8 significant bits: at most 2^-8 = 0.39%);
- the effect on the model: cosine similarity and relative difference of the pooled embeddings of every 96-frame
  chunk, float32 input vs bfloat16-stored input, for a randomly initialised ViT-S and for any `--model` given
  (e.g. the demo's export). The model itself runs in float32 in both cases.

    python benchmarks/benchmark_storage_dtype.py --clips 32
    python benchmarks/benchmark_storage_dtype.py --model outputs/myna-pretrain
"""

import argparse

import numpy as np
import torch

from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaModel
from myna_training.synthetic import synthetic_music_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--model", action="append", default=[], help="saved Myna folders to check as well")
    args = parser.parse_args()

    clips = synthetic_music_dataset(args.clips, seed=123, duration=10.0)
    extractor = MynaFeatureExtractor()
    audio = [np.asarray(a["array"], dtype=np.float32) for a in clips["audio"]]
    features = extractor(audio, sampling_rate=clips[0]["audio"]["sampling_rate"], return_tensors="pt")
    chunks = features["input_values"]  # (num_chunks, 128, 96) float32
    stored = chunks.to(torch.bfloat16).float()
    nonzero = chunks != 0
    relative = ((stored - chunks).abs() / chunks.abs().clamp(min=1e-30))[nonzero]
    print(f"{args.clips} generated clips, {len(chunks)} chunks; power values {chunks[nonzero].min():.2e} .. "
          f"{chunks.max():.2e}")
    print(f"bfloat16 rounding, relative: max {relative.max():.2e} (bound 2^-8 = {2**-8:.2e}), mean {relative.mean():.2e}")

    torch.manual_seed(0)
    models = {"random ViT-S": MynaModel(MynaConfig())}
    for path in args.model:
        models[path] = MynaModel.from_pretrained(path)
    print(f"{'model':<28}{'mean cosine':>14}{'min cosine':>14}{'max rel. L2':>14}")
    for name, model in models.items():
        model.eval()
        with torch.no_grad():
            a = torch.cat([model(chunks[i : i + 64]).pooler_output for i in range(0, len(chunks), 64)])
            b = torch.cat([model(stored[i : i + 64]).pooler_output for i in range(0, len(chunks), 64)])
        cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        rel = ((a - b).norm(dim=-1) / a.norm(dim=-1)).max()
        print(f"{name[-28:]:<28}{cosine.mean():>14.6f}{cosine.min():>14.6f}{rel:>14.2e}")


if __name__ == "__main__":
    main()
