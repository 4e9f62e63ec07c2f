"""Attribution methods: which pixels of an input drive a class logit (or any objective).

Every method takes images ``x`` ``(B, C, H, W)`` in [0, 1] (or one ``(C, H, W)`` image) and a
``target``: ``None`` (each item's top-1 class), a class index or name, one class per item, or an
:class:`objectives.Objective` (e.g. ``obj.channel("_blocks.8", 33)``: attribute a channel).
All run batched, in eval mode with frozen weights, and leave the model as they found it.
They return an :class:`Attribution`: ``raw`` (the method's own output, signed, ``(B, C, H, W)``
or ``(B, 1, H, W)``), ``heatmap`` ``(B, H, W)`` in [0, 1] for display, scores and per-method info.

One method per module: ``gradients`` (:func:`saliency`, :func:`gradient_x_input`,
:func:`smoothgrad`), ``integrated_gradients``, ``occlusion``, ``gradcam`` (:func:`gradcam`,
:func:`guided_backprop`, :func:`guided_gradcam`), ``cam`` (:func:`cam`: class activation maps of
a global-average-pooling + linear head, exact and gradient-free), ``isolate`` (feature isolation:
an optimized mask); ``scorer`` (:class:`Attribution`, :class:`Scorer`: f(x) per row, batched
gradients), ``methods`` (:func:`explain` runs any by name) and ``saving``
(:func:`save_attributions`: raw arrays, heatmaps, overlays, JSON). Display helpers are in
:mod:`fvis.display`.
"""
from .cam import GapHead, cam, gap_linear_head
from .gradcam import check_cam_layer, default_cam_layer, gradcam, guided_backprop, guided_gradcam
from .gradients import gradient_x_input, saliency, smoothgrad
from .integrated_gradients import integrated_gradients
from .isolate import Isolation, isolate, isolate_attribution, shared_features
from .methods import METHODS, explain
from .occlusion import occlusion
from .saving import save_attributions
from .scorer import Attribution, Scorer

__all__ = ["Attribution", "Scorer", "METHODS", "explain", "save_attributions", "saliency", "gradient_x_input",
           "smoothgrad", "integrated_gradients", "occlusion", "gradcam", "guided_backprop", "guided_gradcam",
           "check_cam_layer", "default_cam_layer", "cam", "gap_linear_head", "GapHead", "isolate",
           "isolate_attribution", "shared_features", "Isolation"]
