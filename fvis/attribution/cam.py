"""Class activation maps (Zhou et al. 2016) for networks that end in global average pooling
followed by one linear layer: the class's weights applied to the last feature maps,
``M_c(x, y) = sum_k w_ck A_k(x, y)``. Exact and gradient-free: the mean of ``M_c`` plus the bias
is the class logit. The head is found by inspecting the model (:func:`gap_linear_head`); a model
without it is refused with what was found. Grad-CAM (:mod:`fvis.attribution.gradcam`) generalizes
CAM: on such a head its weights are ``w_ck / (h * w)``, so Grad-CAM on the pooling's input layer is
ReLU(CAM) divided by the map size."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from objectives import Objective

from ..display import normalize
from ..errors import FvisError
from ..hooks import OUTPUT, named_layers
from .scorer import Attribution, Scorer, as_batch, finish, plain_settings

# modules that may sit between the pooling and the linear layer without changing the result
# (dropout is the identity in eval mode, which fvis always runs in)
_PASS_THROUGH = (nn.Dropout, nn.Flatten, nn.Identity)


@dataclass(frozen=True)
class GapHead:
    """The names of a network's global-average-pooling module and of the linear layer after it."""

    pool: str
    linear: str
    between: tuple[str, ...] = ()

    def describe(self) -> str:
        return " -> ".join((self.pool, *self.between, self.linear))


def _is_global_average(m: nn.Module) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1), [1, 1])


def gap_linear_head(model: nn.Module) -> GapHead:
    """Find ``global average pooling -> [dropout / flatten] -> Linear`` at the end of ``model``
    (module registration order, as ``named_modules()`` lists them): the last ``nn.Linear``, the
    pooling module registered just before it, and nothing but pass-through modules between.
    FvisError naming what was found otherwise. :func:`cam` also checks numerically that the
    model's output is that linear layer applied to the pooled maps."""
    layers = [(n, m) for n, m in named_layers(model).items() if not list(m.children())]  # leaves
    linears = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)]
    tail = ", ".join(f"{n} ({type(m).__name__})" for n, m in layers[-5:]) or "no layers"
    if not linears:
        raise FvisError(f"CAM needs a network that ends in global average pooling and one linear layer; "
                        f"this one has no nn.Linear (its last layers: {tail}). Use --method gradcam")
    last = linears[-1]
    if any(list(m.parameters()) for _, m in layers[last + 1:]):
        after = ", ".join(f"{n} ({type(m).__name__})" for n, m in layers[last + 1:] if list(m.parameters()))
        raise FvisError(f"CAM needs the linear layer {layers[last][0]!r} to be the last layer with weights; "
                        f"after it come {after}. Use --method gradcam")
    between = []
    for i in range(last - 1, -1, -1):
        name, m = layers[i]
        if _is_global_average(m):
            return GapHead(name, layers[last][0], tuple(reversed(between)))
        if not isinstance(m, _PASS_THROUGH):
            found = f"{name} ({type(m).__name__}{'' if list(m.parameters()) else ': ' + repr(m)})"
            raise FvisError(f"CAM needs global average pooling (nn.AdaptiveAvgPool2d(1)) right before the linear "
                            f"layer {layers[last][0]!r}, possibly with dropout or flatten between; found {found} "
                            f"before it. Use --method gradcam")
        between.append(name)
    raise FvisError(f"CAM needs global average pooling (nn.AdaptiveAvgPool2d(1)) before the linear layer "
                    f"{layers[last][0]!r}; the model has none (its last layers: {tail}). Use --method gradcam")


def cam(model: nn.Module, x: torch.Tensor, target=None, *, batch_size: int = 16, progress: bool = True) -> Attribution:
    """Class activation maps (Zhou et al. 2016) of ``target`` classes (``None``: top-1, a class
    index or name, or one per item; objectives are not classes: use Grad-CAM for them).

    One forward pass (no gradients) records the feature maps ``A`` ``(B, K, h, w)`` entering the
    global average pooling; ``M_c = sum_k w_ck A_k``. ``raw`` ``(B, 1, H, W)``: the signed map
    upsampled bilinearly to the input; heatmap: its positive part scaled to [0, 1];
    ``info["cam"]``: ``(B, 1, h, w)`` at feature resolution; ``info["head"]``: the modules used;
    ``info["logit_error"]``: the largest difference between the model's logits and
    ``mean(M_c) + b_c`` (a model whose output is not that linear read-out is refused).
    ``batch_size`` and ``progress`` are accepted for a uniform interface (one batched forward)."""
    if isinstance(target, Objective):
        raise FvisError("CAM explains class logits, not objectives; use gradcam for an objective")
    t0 = time.perf_counter()
    head = gap_linear_head(model)
    layers = named_layers(model)
    pool, linear = layers[head.pool], layers[head.linear]
    x = as_batch(x, model)
    maps: list[torch.Tensor] = []
    handle = pool.register_forward_hook(lambda m, inputs, output: maps.append(inputs[0].detach()))
    try:
        with torch.inference_mode(), Scorer(model, target) as scorer:
            score = scorer.setup(x)  # the one forward: logits, classes, and the pooled maps through the hook
            logits = scorer.dry[OUTPUT].float()
    finally:
        handle.remove()
    if not maps:
        raise FvisError(f"the pooling module {head.pool!r} did not run in the forward pass")
    a = maps[-1].float()
    if a.dim() != 4 or a.shape[0] != x.shape[0]:
        raise FvisError(f"CAM needs (B, K, h, w) feature maps entering {head.pool!r}, got {tuple(a.shape)}")
    weight = linear.weight.detach().float()
    bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(weight.shape[0], device=a.device)
    readout = a.mean((2, 3)) @ weight.T + bias
    if logits.shape != readout.shape:
        raise FvisError(f"CAM: the model output {tuple(logits.shape)} is not the linear layer {head.linear!r} "
                        f"{tuple(readout.shape)}")
    error = float((logits - readout).abs().max())
    if error > 1e-3 * (1 + float(logits.abs().max())):
        raise FvisError(f"CAM: the model's logits are not {head.linear!r} applied to the pooled maps of "
                        f"{head.pool!r} (largest difference {error:.3g}): something non-linear sits between. "
                        f"Use --method gradcam")
    classes = scorer.classes.to(a.device)
    maps_c = torch.einsum("bkhw,bk->bhw", a, weight[classes])[:, None].cpu()  # (B, 1, h, w)
    up = F.interpolate(maps_c, x.shape[-2:], mode="bilinear", align_corners=False)
    return finish("cam", up, normalize(up[:, 0].clamp_min(0), None), scorer, score, t0,
                  plain_settings(batch_size=batch_size), cam=maps_c, head=head.describe(),
                  bias=bias[classes].cpu(), logit_error=error)
