"""2-D embeddings of activation vectors (scikit-learn's PCA and t-SNE; UMAP from ``umap-learn``
when installed), seeded, and the grid of cells an atlas averages over."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import FvisError

METHODS = ("pca", "tsne", "umap")


def embed(values: torch.Tensor, method: str = "tsne", seed: int = 0, pca_dims: int = 50,
          perplexity: float | None = None) -> torch.Tensor:
    """``(N, D)`` -> ``(N, 2)`` coordinates scaled into [0, 1] (aspect kept). Rows are centred;
    t-SNE and UMAP run on the first ``pca_dims`` principal components. Same seed, same map."""
    if method not in METHODS:
        raise FvisError(f"unknown embedding method {method!r}: choose from {', '.join(METHODS)}")
    x = values.detach().double().cpu().numpy()
    n = len(x)
    if n < 3:
        raise FvisError(f"a 2-D map needs at least 3 activation vectors, got {n} (add images or --views)")
    x = x - x.mean(0)
    dims = min(pca_dims if method != "pca" else 2, n - 1, x.shape[1])
    PCA, TSNE = _sklearn()
    if method == "umap":
        umap = _umap()
    z = PCA(dims, random_state=seed, svd_solver="full").fit_transform(x) if dims < x.shape[1] or method == "pca" else x
    if method == "pca" and z.shape[1] < 2:
        z = np.pad(z, ((0, 0), (0, 2 - z.shape[1])))
    elif method == "tsne":
        p = perplexity or float(min(30.0, max(2.0, (n - 1) / 3)))
        z = TSNE(2, perplexity=min(p, n - 1.0), init="pca", random_state=seed, n_jobs=1).fit_transform(z)
    elif method == "umap":
        z = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed, n_jobs=1).fit_transform(z)
    return torch.from_numpy(_unit(np.asarray(z, dtype=np.float64))).float()


def check_method(method: str) -> None:
    """Fail early (before any long work) on an unknown method or a missing optional package."""
    if method not in METHODS:
        raise FvisError(f"unknown embedding method {method!r}: choose from {', '.join(METHODS)}")
    _sklearn()
    if method == "umap":
        _umap()


def _sklearn():
    try:  # optional heavy dependency (0.6 s to import): only maps and atlases need it
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE
    except ImportError:
        raise FvisError("maps and atlases need scikit-learn: pip install 'fvis[maps]' (or scikit-learn)") from None
    return PCA, TSNE


def _umap():
    try:
        import umap  # optional heavy dependency
    except ImportError:
        raise FvisError("--method umap needs the optional package umap-learn (pip install umap-learn); "
                        "or use --method tsne or pca") from None
    return umap


def _unit(z: np.ndarray) -> np.ndarray:
    """Shift and scale both axes by one factor into [0, 1]."""
    lo = z.min(0)
    span = float((z.max(0) - lo).max())
    return (z - lo) / (span if span > 0 else 1.0)


def grid_cells(xy: torch.Tensor, grid: int) -> torch.Tensor:
    """The cell ``row * grid + column`` of each point ``(N, 2)`` in [0, 1] (x: column, y: row from the top)."""
    ij = (xy.clamp(0, 1) * grid).floor().long().clamp(max=grid - 1)
    return ij[:, 1] * grid + ij[:, 0]


def cell_means(values: torch.Tensor, cells: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grid * grid, D)`` mean of the rows of ``values`` in each cell (0 where empty), ``(grid * grid,)`` counts."""
    counts = torch.zeros(grid * grid, dtype=torch.long).index_add_(0, cells, torch.ones_like(cells))
    sums = torch.zeros(grid * grid, values.shape[1], dtype=torch.float64).index_add_(0, cells, values.double())
    return (sums / counts.clamp_min(1)[:, None]).float(), counts
