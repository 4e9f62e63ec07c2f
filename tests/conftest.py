import pytest
import torch

import fvis


@pytest.fixture(scope="session")
def lite0():
    """The real pretrained EfficientNet-Lite0 (offline weights), shared by the tests."""
    torch.set_num_threads(2)
    return fvis.load("efficientnet-lite0")


@pytest.fixture(scope="session")
def coffee():
    """skimage's coffee photo, 224x224 in [0, 1] (Lite0: espresso)."""
    from skimage import data
    from torchvision.transforms.v2 import functional as F

    img = torch.from_numpy(data.coffee()).permute(2, 0, 1).float() / 255
    return F.center_crop(F.resize(img, [224], antialias=True), [224, 224])
