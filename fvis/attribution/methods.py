"""Every attribution method by name: :data:`METHODS` and :func:`explain`."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from ..errors import FvisError, suggest
from .cam import cam
from .gradcam import gradcam, guided_gradcam
from .gradients import gradient_x_input, saliency, smoothgrad
from .integrated_gradients import integrated_gradients
from .isolate import isolate_attribution
from .occlusion import occlusion
from .scorer import Attribution

METHODS = ("saliency", "gradxinput", "smoothgrad", "ig", "gradcam", "guided-gradcam", "cam", "occlusion", "mask")


def _functions() -> dict:
    return {"saliency": saliency, "gradxinput": gradient_x_input, "smoothgrad": smoothgrad,
            "ig": integrated_gradients, "gradcam": gradcam, "guided-gradcam": guided_gradcam, "cam": cam,
            "occlusion": occlusion, "mask": isolate_attribution}


def explain(model: nn.Module, x: torch.Tensor, method: str, target=None, **options) -> Attribution:
    """Run one method by name (``METHODS``). Options a method does not take (and ``None``
    values) are ignored, so one settings dict can drive several methods."""
    functions = _functions()
    if method not in functions:
        raise FvisError(f"unknown method {method!r}.{suggest(method, METHODS)} Choose from {', '.join(METHODS)}")
    fn = functions[method]
    accepted = set(inspect.signature(fn).parameters)
    return fn(model, x, target, **{k: v for k, v in options.items() if k in accepted and v is not None})
