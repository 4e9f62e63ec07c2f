"""Old import path, kept as a thin re-export: use :mod:`fvis.attribution` (``gradcam``,
``guided_backprop``, ``guided_gradcam``; ``cam`` for class activation maps)."""
from .attribution.cam import GapHead, cam, gap_linear_head  # noqa: F401
from .attribution.gradcam import (GUIDED_TYPES, check_cam_layer, default_cam_layer, gradcam,  # noqa: F401
                                  guided_backprop, guided_gradcam)
