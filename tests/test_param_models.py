"""Parameterizations, model loading, class lookup and image I/O."""
import urllib.error

import pytest
import torch
from torch import nn

import fvis
from fvis.errors import FvisError
from fvis.files import load_image, save_image
from fvis.models import IMAGENET_STD, LITE_MEAN


@pytest.mark.parametrize("cls", [fvis.FourierImage, fvis.PixelImage])
def test_params_any_channels_non_square_batch(cls):
    p = cls((40, 72), batch=3, channels=4, seed=1)
    x = p()
    assert x.shape == (3, 4, 40, 72) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, cls((40, 72), batch=3, channels=4, seed=1)())
    assert not torch.equal(x, cls((40, 72), batch=3, channels=4, seed=2)())


@pytest.mark.parametrize("cls", [fvis.FourierImage, fvis.PixelImage])
def test_params_initialize_from_image(cls):
    img = torch.rand(3, 33, 50, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    p = cls(init=img, batch=2)
    assert p().shape == (2, 3, 33, 50)
    assert torch.allclose(p(), img.expand(2, -1, -1, -1), atol=1e-3)


def test_fourier_decay_power_smooths():
    from regularizers import high_frequency_energy

    rough = fvis.FourierImage(64, decay_power=0.0, sd=0.5, seed=0)()
    smooth = fvis.FourierImage(64, decay_power=1.5, sd=0.5, seed=0)()
    assert high_frequency_energy(smooth).item() < high_frequency_energy(rough).item()


def test_lite0_is_real_and_normalizes_once(lite0, coffee):
    assert lite0.input_size == (224, 224) and lite0.class_names[967] == "espresso"
    assert torch.allclose(lite0.mean.flatten(), torch.tensor(LITE_MEAN))  # TF Lite weights: (v - 127) / 128
    with torch.no_grad():
        p = lite0(coffee[None]).softmax(1)[0]
        manual = lite0.net(((coffee - lite0.mean[0]) / lite0.std[0])[None]).softmax(1)[0]
    assert p.argmax().item() == 967 and p[967] > 0.5
    assert torch.allclose(p, manual)


def test_lite0_normalization_fits_its_batchnorm_statistics(lite0, coffee):
    """With the right normalization a photo's stem activations spread less within the image than
    the BatchNorm population statistics allow (ImageNet mean/std would make them ~2x wider)."""
    with torch.no_grad(), fvis.hooks.Capture(lite0, ["_conv_stem"]) as cap:
        stem = cap.forward(coffee[None])["_conv_stem"][0]
    bn = lite0.net._bn0
    live = bn.running_var > 1e-3
    ratio = stem.flatten(1).std(1)[live] / bn.running_var[live].sqrt()
    assert 0.3 < ratio.median() < 1.0


def test_local_state_dict_round_trip(lite0, tmp_path):
    path = tmp_path / "lite0.pt"
    torch.save(lite0.net.state_dict(), path)
    again = fvis.load("efficientnet-lite0", weights=path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), lite0(x))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(FvisError, match="cannot read weights file"):
        fvis.load("efficientnet-lite0", weights=tmp_path / "bad.pt")
    with pytest.raises(FvisError, match="weights file not found"):
        fvis.load("efficientnet-lite0", weights=tmp_path / "missing.pt")


def test_torchvision_model_with_local_weights_uses_its_preprocessing(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    model = fvis.load("resnet18", weights=path)
    assert model.input_size == (224, 224) and model.class_names[94] == "hummingbird"
    assert torch.allclose(model.std.flatten(), torch.tensor(IMAGENET_STD))
    assert "layer3.1.conv2" in dict(fvis.hooks.named_layers(model))
    with pytest.raises(FvisError, match="do not fit this architecture"):
        fvis.load("resnet34", weights=path)


def test_torchvision_download_failure_is_a_clear_error(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(FvisError, match=r"could not download the weights of resnet18.*--weights PATH"):
        fvis.load("resnet18")


def test_unknown_model_suggests():
    with pytest.raises(FvisError, match=r"unknown model 'efficientnet-lite9'.*efficientnet-lite0"):
        fvis.load("efficientnet-lite9")


def test_wrap_any_module_with_its_normalization():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    model = fvis.wrap(net, mean=[0.5], std=[0.25], input_size=(20, 30), class_names=["a", "b", "c"])
    x = torch.rand(2, 1, 20, 30)
    assert torch.equal(model(x), net((x - 0.5) / 0.25))
    import objectives as obj
    r = fvis.optimize(model, obj.class_logit("b", model.class_names), fvis.PixelImage((20, 30), channels=1),
                      steps=3, progress=False)
    assert r.input.shape == (1, 1, 20, 30)


def test_image_io_round_trip_and_unreadable(tmp_path):
    img = torch.rand(3, 20, 30)
    save_image(img, tmp_path / "a.png")
    back = load_image(tmp_path / "a.png")
    assert back.shape == (3, 20, 30) and (back - img).abs().max() <= 0.5 / 255 + 1e-6
    assert load_image(tmp_path / "a.png", size=16).shape == (3, 16, 16)
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FvisError, match="cannot read image"):
        load_image(tmp_path / "b.png")
    with pytest.raises(FvisError, match="image not found"):
        load_image(tmp_path / "c.png")
    assert not list(tmp_path.glob("*.tmp"))
