"""Objective algebra and unit selection, exact on hand-checkable activations."""
import pytest
import torch

import objectives as obj
from fvis.errors import FvisError
from fvis.hooks import Activations


def acts_of(**layers):
    batch = next(iter(layers.values())).shape[0]
    return Activations({k: [v] for k, v in layers.items() if k != "output"}, layers.get("output"), batch)


A = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).view(2, 3, 2, 4)  # (B=2, C=3, H=2, W=4)


def test_leaf_values_per_item():
    acts = acts_of(L=A)
    assert torch.equal(obj.channel("L", 1)(acts), A[:, 1].mean((1, 2)))
    assert torch.equal(obj.layer("L")(acts), A.pow(2).mean((1, 2, 3)))


def test_neuron_x_is_column_y_is_row_on_non_square_maps():
    acts = acts_of(L=A)
    assert torch.equal(obj.neuron("L", 2, x=3, y=1)(acts), A[:, 2, 1, 3])
    assert torch.equal(obj.neuron("L", 2)(acts), A[:, 2, 1, 2])  # centre: y = H//2, x = W//2
    with pytest.raises(FvisError, match=r"x=1, y=3 outside .* width 4 and height 2"):
        obj.neuron("L", 0, x=1, y=3).check(acts)


def test_algebra_is_exact_and_per_item():
    acts = acts_of(L=A)
    a, b = obj.channel("L", 0), obj.channel("L", 2)
    va, vb = a(acts), b(acts)
    assert torch.equal((a - b)(acts), va - vb)
    assert torch.equal((2 * a + b)(acts), 2 * va + vb)
    assert torch.equal((a * b)(acts), va * vb)
    assert torch.equal((a / 4)(acts), va / 4)
    assert torch.equal((1 - a)(acts), 1 - va)
    assert torch.equal((-a)(acts), -va)
    assert torch.equal((a - 0.5 * b)(acts), va - 0.5 * vb)  # Xplique's bug would give -(a + b) style sums
    assert (a - b).layers == {"L"}
    assert (2 * a + b).name == "((2 * channel:L:0) + channel:L:2)"


def test_batch_targeting_and_batched():
    acts = acts_of(L=A)
    a, b = obj.channel("L", 0), obj.channel("L", 2)
    va, vb = a(acts), b(acts)
    assert torch.equal(a.on(1)(acts), torch.tensor([0.0, va[1].item()]))
    assert torch.equal(a.on(slice(0, 2))(acts), va)
    both = obj.batched([a, b])
    assert torch.equal(both(acts), torch.stack([va[0], vb[1]]))
    trace = {}
    both(acts, trace)
    assert set(trace) >= {"channel:L:0", "channel:L:0@0", "channel:L:2@1"}
    with pytest.raises(FvisError, match="batch items 5"):
        a.on(5).check(acts)


def test_channel_range_is_checked():
    acts = acts_of(L=A)
    with pytest.raises(FvisError, match=r"channel 3 out of range for layer 'L' with 3 channels: valid 0..2"):
        obj.channel("L", 3).check(acts)
    obj.channel("L", 2).check(acts)


def test_sequence_and_flat_activations():
    seq = torch.randn(2, 5, 7)  # (B, T, D): channel is the last dim
    flat = torch.randn(2, 7)
    acts = acts_of(S=seq, F=flat)
    assert torch.allclose(obj.channel("S", 3)(acts), seq[..., 3].mean(1))
    assert torch.equal(obj.neuron("S", 3)(acts), seq[:, -1, 3])
    assert torch.equal(obj.neuron("S", 3, x=1)(acts), seq[:, 1, 3])
    assert torch.equal(obj.channel("F", 6)(acts), flat[:, 6])


def test_direction_and_cosine_power():
    acts = acts_of(L=A)
    v = torch.tensor([1.0, 0.0, -1.0])
    dot = (A.movedim(1, -1) @ v).flatten(1).mean(1)
    assert torch.allclose(obj.direction("L", v)(acts), dot)
    a = A.movedim(1, -1)
    d = a @ v
    cos = d / (a.norm(dim=-1) * v.norm())
    expected = (d * cos.clamp_min(0.1) ** 2).flatten(1).mean(1)
    assert torch.allclose(obj.direction("L", v, cossim_pow=2)(acts), expected)
    with pytest.raises(FvisError, match="direction has 2 entries"):
        obj.direction("L", [1.0, 2.0]).check(acts)


def test_class_logit_by_index_and_name():
    logits = torch.randn(3, 1000)
    acts = acts_of(output=logits)
    assert torch.equal(obj.class_logit(94)(acts), logits[:, 94])
    assert torch.equal(obj.class_logit("hummingbird")(acts), logits[:, 94])
    assert torch.equal(obj.class_logit("Egyptian_cat")(acts), logits[:, 285])
    with pytest.raises(FvisError, match=r"unknown class name 'humingbird'.*hummingbird"):
        obj.class_logit("humingbird")
    with pytest.raises(FvisError, match="out of range"):
        obj.class_logit(5).check(acts_of(output=torch.randn(1, 3)))


def test_diversity_rewards_different_items():
    same = torch.ones(3, 4, 5, 5)
    acts_same = acts_of(L=same)
    different = torch.randn(3, 4, 5, 5, generator=torch.Generator().manual_seed(0)).relu()
    d = obj.diversity("L")
    assert torch.allclose(d(acts_same), torch.full((3,), -1.0))
    assert (d(acts_of(L=different)) > -1.0).all()


@pytest.mark.parametrize("spec", ["channel", "channel:L", "channel:L:x", "neuron:L:1:2", "layer:",
                                  "logit:", "pixel:3", "neuron:L:1:a:2", ""])
def test_unparseable_specs(spec):
    with pytest.raises(FvisError, match="cannot parse objective"):
        obj.parse(spec)


def test_spec_forms():
    assert obj.parse("channel:_blocks.3:5").name == "channel:_blocks.3:5"
    assert obj.parse("neuron:_blocks.3:5:2:1").name == "neuron:_blocks.3:5:2:1"
    assert obj.parse("layer:_blocks.3").layers == {"_blocks.3"}
    assert obj.parse("logit:hummingbird").name == "logit:94:hummingbird"
    assert obj.parse("logit:7").name == "logit:7"
