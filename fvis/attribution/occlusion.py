"""Occlusion (Zeiler & Fergus 2014): the score drop when a patch is replaced by a baseline."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from ..baselines import make_baseline
from ..display import normalize
from ..errors import FvisError
from ..progress import progress_bar
from .scorer import Attribution, Scorer, as_batch, chunks, finish, plain_settings


def _positions(size: int, patch: int, stride: int) -> list[int]:
    if patch > size:
        raise FvisError(f"occlusion patch {patch} is larger than the image ({size} px)")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:  # cover the last rows/columns too
        starts.append(size - patch)
    return starts


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def occlusion(model: nn.Module, x: torch.Tensor, target=None, *, patch: int | tuple[int, int] = 16,
              stride: int | tuple[int, int] = 8, baseline=0.0, baseline_images: str | Path | None = None,
              seed: int = 0, batch_size: int = 16, progress: bool = True) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014): slide a ``patch`` (all channels) over the image with
    ``stride``, replacing it by ``baseline`` (a value, default 0 = black as captum, or a baseline
    kind: ``"blur"``, ``"mean"``, ...), and record the score drop f(x) - f(occluded).
    ``raw`` ``(B, 1, H, W)``: per pixel, the mean drop over the windows covering it (captum's
    definition); ``info["grid"]``: ``(B, ny, nx)`` drop per window. Forward passes only, batched."""
    t0 = time.perf_counter()
    x = as_batch(x, model)
    (ph, pw), (sh, sw) = _pair(patch), _pair(stride)
    if min(ph, pw, sh, sw) < 1:
        raise FvisError(f"occlusion patch and stride must be >= 1, got patch {patch}, stride {stride}")
    h, w = x.shape[-2:]
    ys, xs = _positions(h, ph, sh), _positions(w, pw, sw)
    windows = [(y, x_) for y in ys for x_ in xs]
    base = make_baseline(x, baseline, seed=seed, folder=baseline_images)
    b = x.shape[0]
    drops = torch.empty(b, len(windows))
    with torch.inference_mode(), Scorer(model, target) as scorer:
        score = scorer.setup(x)
        total = b * len(windows)
        bar = progress_bar(total=total, show=progress, desc="occlusion", unit="img")
        for i in range(b):
            for part in chunks(len(windows), batch_size):
                rows = x[i].expand(part.stop - part.start, -1, -1, -1).clone()
                for r, (y, x_) in enumerate(windows[part]):
                    rows[r, :, y:y + ph, x_:x_ + pw] = base[i, :, y:y + ph, x_:x_ + pw]
                s, _ = scorer(rows, torch.full((rows.shape[0],), i))
                drops[i, part] = score[i] - s.float().cpu()
                bar.update(rows.shape[0])
        bar.close()
    total_map, count = torch.zeros(b, 1, h, w), torch.zeros(1, 1, h, w)
    for j, (y, x_) in enumerate(windows):
        total_map[:, 0, y:y + ph, x_:x_ + pw] += drops[:, j].view(b, 1, 1)
        count[:, 0, y:y + ph, x_:x_ + pw] += 1
    raw = total_map / count
    return finish("occlusion", raw, normalize(raw[:, 0].clamp_min(0), None), scorer, score, t0,
                   plain_settings(patch=[ph, pw], stride=[sh, sw], seed=seed, batch_size=batch_size,
                             baseline=baseline if isinstance(baseline, (int, float, str)) else "tensor"),
                   grid=drops.view(b, len(ys), len(xs)), windows=len(windows))
