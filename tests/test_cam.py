"""Class activation maps (Zhou et al. 2016): a hand computation on a small GAP + linear network,
equality with Grad-CAM up to a positive scale where theory says so (small network and real Lite0
at the layer entering its average pooling), refusal of models without that head, the command."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import fvis
import objectives as obj
from fvis.attribution import cam, gap_linear_head, gradcam
from fvis.cli import main
from fvis.errors import FvisError


class GapNet(nn.Module):
    def __init__(self, pool: nn.Module | None = None, head: nn.Module | None = None, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = pool or nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = head or nn.Linear(8, 5)
        self.scale = scale

    def forward(self, x):
        return self.scale * self.fc(self.drop(self.pool(self.act(self.conv(x))).flatten(1)))


def small(**kw):
    return fvis.wrap(GapNet(**kw), mean=None, std=None, input_size=12)


def test_cam_equals_the_hand_computation_and_the_logit(coffee):
    model = small()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    a = cam(model, x, [0, 3, 4], progress=False)
    net = model.net
    with torch.no_grad():
        feats = net.act(net.conv(x))  # (3, 8, 12, 12)
        hand = torch.stack([torch.einsum("khw,k->hw", feats[i], net.fc.weight[c]) for i, c in enumerate([0, 3, 4])])
        logits = net.fc(feats.mean((2, 3)))
    assert a.target.tolist() == [0, 3, 4] and a.raw.shape == (3, 1, 12, 12)
    assert torch.allclose(a.info["cam"][:, 0], hand, atol=1e-5)
    assert torch.allclose(a.raw[:, 0], hand, atol=1e-5)  # same resolution: the upsampling is the identity
    # Zhou et al.: the map's mean plus the class bias is the class logit
    assert torch.allclose(hand.mean((1, 2)) + net.fc.bias[[0, 3, 4]], logits[[0, 1, 2], [0, 3, 4]], atol=1e-5)
    assert torch.allclose(a.score, logits[[0, 1, 2], [0, 3, 4]], atol=1e-5)
    assert a.info["head"] == "pool -> drop -> fc" and a.info["logit_error"] < 1e-5


def test_small_network_cam_is_gradcam_times_the_map_size():
    model = small()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    c = cam(model, x, progress=False).info["cam"]
    g = gradcam(model, x, layer="act", progress=False).info["cam"]
    assert torch.allclose(c.clamp_min(0) / (12 * 12), g, atol=1e-6)


def test_lite0_cam_equals_gradcam_up_to_a_positive_scale(lite0, coffee):
    """EfficientNet-Lite's head: _conv_head -> _bn1 -> _swish (ReLU6) -> _avg_pooling -> _dropout -> _fc.
    Grad-CAM at the layer entering the pooling (_swish's last call) has weights w_c / 49, so it is
    ReLU(CAM) / 49 (7 x 7 maps) up to float rounding."""
    state = ([m.training for m in lite0.modules()], [p.requires_grad for p in lite0.parameters()])
    a = cam(lite0, coffee, progress=False)
    assert state == ([m.training for m in lite0.modules()], [p.requires_grad for p in lite0.parameters()])
    assert sum(len(m._forward_hooks) for m in lite0.modules()) == 0
    assert int(a.target[0]) == 967 and a.info["head"] == "_avg_pooling -> _dropout -> _fc"
    g = gradcam(lite0, coffee, layer="_swish", progress=False)
    assert a.info["cam"].shape == g.info["cam"].shape == (1, 1, 7, 7)
    ratio = a.info["cam"].clamp_min(0) / 49
    assert torch.allclose(ratio, g.info["cam"], rtol=1e-4, atol=1e-5 * float(g.info["cam"].max()))
    assert a.info["logit_error"] < 1e-3 and abs(float(a.score[0]) - float(g.score[0])) < 1e-4


@pytest.mark.parametrize("kw, message", [
    (dict(pool=nn.AdaptiveMaxPool2d(1)), "found pool (AdaptiveMaxPool2d"),
    (dict(head=nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 5))), "found fc.1 (ReLU"),
    (dict(head=nn.Sequential(nn.Linear(8, 5), nn.BatchNorm1d(5))), "after it come fc.1 (BatchNorm1d)"),
    (dict(scale=2.0), "something non-linear sits between"),
])
def test_cam_refuses_a_model_without_the_head(kw, message):
    model = small(**kw)
    with pytest.raises(FvisError, match="CAM") as e:
        cam(model, torch.rand(1, 3, 12, 12), progress=False)
    assert message in str(e.value), str(e.value)


def test_cam_refuses_objectives_and_convolutional_heads(lite0, coffee):
    with pytest.raises(FvisError, match="not objectives"):
        cam(lite0, coffee, obj.channel("_blocks.8", 3), progress=False)
    convnet = fvis.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 1)), mean=None, std=None)
    with pytest.raises(FvisError, match="has no nn.Linear"):
        gap_linear_head(convnet)


def test_cli_explain_cam(tmp_path, capsys, coffee):
    from fvis.files import save_image

    save_image(coffee, tmp_path / "coffee.png")
    out = tmp_path / "ex"
    code = main(["explain", "--model", "efficientnet-lite0", "--image", str(tmp_path / "coffee.png"), "-m", "cam",
                 "--quiet", "--out", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    meta = json.loads((out / "cam.json").read_text())
    assert meta["method"] == "cam" and meta["class_name"] == "espresso"
    assert meta["info"]["head"] == "_avg_pooling -> _dropout -> _fc"
    assert np.load(out / "cam.npy").shape == (1, 224, 224) and (out / "cam_overlay.png").exists()
    code = main(["explain", "--model", "efficientnet-lite0", "--image", str(tmp_path / "coffee.png"), "-m", "cam",
                 "-o", "channel:_blocks.8:3", "--out", str(tmp_path / "o2")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and err.startswith("fvis: error: CAM explains class logits"), err
