"""Concepts: TCAV with an honest significance test, concept sensitivity of single images, offline concepts.

>>> from fvis import concepts
>>> r = concepts.tcav(model, ["_blocks.8"], "zebra", class_images="zebras/",
...                   concepts={"stripes": concepts.texture("stripes", 50)}, random="photos/", runs=20)
>>> r.get("stripes").score_mean, r.get("stripes").p_value, r.get("stripes").significant
"""
from .activations import compute_activations, compute_gradients
from .cavfile import CAVSet, Sensitivity, cav_objective, load_cavs, save_cavs, sensitivity
from .cavs import CAV_METHODS, Problem, fit_cavs, scores
from .stats import t_test
from .synthetic import COLOURS, KINDS, colour, concept, random_crops, save_folder, texture
from .tcav import ConceptResult, TCAVResult, tcav

__all__ = ["tcav", "TCAVResult", "ConceptResult", "fit_cavs", "Problem", "scores", "t_test", "CAV_METHODS",
           "save_cavs", "load_cavs", "CAVSet", "cav_objective", "sensitivity", "Sensitivity", "compute_activations",
           "compute_gradients", "texture", "colour", "concept", "random_crops", "save_folder", "KINDS", "COLOURS"]
