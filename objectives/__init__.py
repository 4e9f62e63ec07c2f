"""Objectives for fvis: per-item scores that the engine maximizes.

>>> import objectives as obj
>>> o = obj.channel("_blocks.3", 5) - 0.5 * obj.channel("_blocks.3", 7)
>>> o = obj.batched([obj.class_logit("hummingbird"), obj.class_logit(94)])
"""
from . import adversarial, language
from .adversarial import targeted, untargeted
from .base import Objective, batched
from .spec import parse
from .vision import channel, class_logit, class_logits, diversity, direction, equidistant, layer, neuron

__all__ = ["language", "Objective", "batched", "parse", "channel", "class_logit", "class_logits", "equidistant", "diversity", "direction", "layer", "neuron",
           "adversarial", "targeted", "untargeted"]
