"""Regularizers for fvis: each an optional input transform and/or a per-item penalty.

>>> import regularizers as reg
>>> regs = [reg.TransformRobustness(), reg.FrequencyPenalty(tv=0.25), reg.L1(0.05)]
"""
from .base import Regularizer
from .mask import MaskArea, MaskSmoothness
from .distribution import SortedMatching, gaussian_quantiles, quantile_levels
from .matching import ActivationMatching, batchnorm_layers, batchnorm_stats
from .snap import Snap, nearest
from .penalties import L1, L2, FrequencyPenalty, LpPenalty, high_frequency_energy, high_pass_power, luminance
from .blur import RandomBlur, gaussian_blur
from .colour import ColourShift
from .relevance import RelevanceFilter, channel_relevance, relevant_channels
from .transforms import DEFAULT_SCALES, TransformRobustness

__all__ = ["Regularizer", "ActivationMatching", "SortedMatching", "gaussian_quantiles", "quantile_levels", "batchnorm_layers", "batchnorm_stats", "Snap", "nearest", "L1", "L2", "LpPenalty", "FrequencyPenalty", "high_frequency_energy", "high_pass_power", "luminance", "RandomBlur", "gaussian_blur", "ColourShift",
           "TransformRobustness", "DEFAULT_SCALES", "MaskArea", "MaskSmoothness",
           "RelevanceFilter", "channel_relevance", "relevant_channels"]
