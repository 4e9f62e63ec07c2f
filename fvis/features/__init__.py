"""Feature spaces: activations of a folder (pooled or spatial, cached), 2-D maps of them
(PCA, t-SNE, UMAP) and activation atlases rendered by the engine.

>>> from fvis import features
>>> fmap = features.feature_map(model, "photos/", "_blocks.15", method="tsne")
>>> atlas = features.atlas(model, "photos/", "_blocks.10", grid=8, steps=128)
"""
from .activations import FolderActivations, cached, compute_activations, folder_activations, view_images, view_of
from .atlas import Atlas, atlas, direction_logit_effects, save_atlas
from .embed import METHODS, cell_means, embed, grid_cells
from .maps import LABELS, FeatureMap, feature_map, save_map

__all__ = ["FolderActivations", "folder_activations", "compute_activations", "cached", "view_of", "view_images", "METHODS",
           "embed", "grid_cells", "cell_means", "LABELS", "FeatureMap", "feature_map", "save_map", "Atlas",
           "atlas", "save_atlas", "direction_logit_effects"]
