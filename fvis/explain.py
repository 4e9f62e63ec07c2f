"""Old import path, kept as a thin re-export: use :mod:`fvis.attribution` (one method per module)
and :mod:`fvis.display` (``colorize``, ``overlay``, ``normalize``...)."""
from .attribution import (METHODS, Attribution, GapHead, Isolation, Scorer, cam, check_cam_layer,  # noqa: F401
                          default_cam_layer, explain, gap_linear_head, gradcam, gradient_x_input, guided_backprop,
                          guided_gradcam, integrated_gradients, isolate, isolate_attribution, occlusion, saliency,
                          save_attributions, shared_features, smoothgrad)
from .attribution.scorer import as_batch, chunks, finish, gradients, plain_gradient, plain_settings  # noqa: F401
from .display import colorize, normalize, overlay, reduce_channels, spotlight  # noqa: F401
