"""``workbench bench cka``: the core's one-pass CKA matrix ÷ the per-pair naive computation.

Setting (issue 3): resnet56's 27 residual units on 2,000 Fashion-MNIST training images (random images when
the dataset is not on the machine; the timing does not depend on the pixel values). The core hooks every
unit once per batch and builds the L × L matrix from stacked centred Grams in one product. The reference
hooks the same features once and then calls ``linear_cka`` for each of the L(L+1)/2 pairs (the form
SGLP's released code takes). At 2,000 images the reference needs about an hour on 2 cores, so the full
setting times a random sample of pairs and scales the mean pair time to all pairs (stated in the detail);
``quick=true`` uses 300 images and times every pair.
"""

from __future__ import annotations

import random
import statistics
import time

import torch

from workbench.bench import BenchResult
from workbench.models import build_model
from workbench.models.features import FeatureHooks
from workbench.prune.cka import cka_matrix, linear_cka


def _images(n: int) -> tuple[torch.Tensor, str]:
    try:
        from workbench.data import get_dataset

        data = get_dataset("fashion-mnist", "train", augment=False, subset=n, seed=0)
        return torch.stack([data[i][0] for i in range(len(data))]), "fashion-mnist train"
    except Exception:  # noqa: BLE001 - any missing-data error: fall back to random images
        return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)), "random images"


def bench(repeats: int = 3, quick: bool = False) -> list[BenchResult]:
    n, sampled_pairs = (300, None) if quick else (2000, 12)
    images, source = _images(n)
    torch.manual_seed(0)
    model = build_model("resnet56", num_classes=10, in_channels=1).eval()
    units = [name for name, _ in model.named_modules() if name.count(".") == 1 and name.startswith("layer")]
    batches = list(torch.split(images, 250))
    device = torch.device("cpu")
    ratios, diffs, ours_times, ref_times = [], [], [], []
    for r in range(max(1, repeats if quick else 1)):
        start = time.perf_counter()
        ours = cka_matrix(model, units, batches, device)
        t_ours = time.perf_counter() - start

        start = time.perf_counter()
        with torch.no_grad(), FeatureHooks(model, units, detach=True) as hooked:
            chunks: dict[str, list[torch.Tensor]] = {u: [] for u in units}
            for b in batches:
                model(b)
                for u in units:
                    chunks[u].append(hooked[u].clone())
        feats = [torch.cat(chunks[u]) for u in units]
        t_forward = time.perf_counter() - start
        pairs = [(i, j) for i in range(len(units)) for j in range(i, len(units))]
        timed_pairs = pairs if sampled_pairs is None else random.Random(r).sample(pairs, sampled_pairs)
        start = time.perf_counter()
        diff = 0.0
        for i, j in timed_pairs:
            diff = max(diff, abs(linear_cka(feats[i], feats[j]).item() - ours[i, j].item()))
        t_pairs = (time.perf_counter() - start) * len(pairs) / len(timed_pairs)
        t_ref = t_forward + t_pairs
        ratios.append(t_ref / t_ours)
        diffs.append(diff)
        ours_times.append(t_ours)
        ref_times.append(t_ref)
        del feats, chunks
    return [
        BenchResult(
            name="cka: naive time ÷ core time",
            ratio=statistics.median(ratios),
            ratios=ratios,
            goal="≥ 5",
            detail={
                "units": len(units),
                "images": n,
                "source": source,
                "core_s": round(min(ours_times), 2),
                "naive_s": round(min(ref_times), 1),
                "naive_pairs_timed": f"{len(timed_pairs)}/{len(pairs)}",
                "max_abs_diff": max(diffs),
                "max_abs_diff_goal": "≤ 1e-8",
            },
        )
    ]
