"""How the model runs (issue 23): ``compile`` gives the eager run's image; ``precision="bf16"``
runs under autocast with float32 activations for the objective; bad values fail clearly."""
import pytest
import torch

import fvis
import objectives as obj
import regularizers as reg
from fvis.errors import FvisError
from fvis.execution import compile_reason
from fvis.hooks import capturing
from fvis.policies import CaptureOptions


def _tiny():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 10))
    return fvis.wrap(net, input_size=(40, 40))


def _run(model, **options):
    return fvis.optimize(model, obj.channel("3", 2), fvis.FourierImage(40, batch=2, seed=1),
                         [reg.TransformRobustness()], steps=4, seed=2, progress=False,
                         policies=[CaptureOptions(**options)])


@pytest.mark.skipif(compile_reason() is not None, reason=f"torch.compile cannot run here: {compile_reason()}")
def test_compiled_step_gives_the_eager_image():
    model = _tiny()
    eager, compiled = _run(model), _run(model, compile=True)  # a hooked inner layer: hooks run between graphs
    assert torch.allclose(compiled.input, eager.input, atol=1e-4), (compiled.input - eager.input).abs().max()
    assert torch.allclose(compiled.values, eager.values, atol=1e-4)
    assert (eager.input - fvis.FourierImage(40, batch=2, seed=1)().detach()).abs().max() > 1e-3  # it optimized
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_bf16_runs_under_autocast_with_float32_activations():
    model = _tiny()
    x = torch.rand(2, 3, 40, 40)
    with capturing(model, ["0", "output"], precision="bf16") as cap:
        acts = cap.plan(x)
        conv = acts["0"]
        out = acts["output"]
    assert conv.dtype == torch.float32 and out.dtype == torch.float32
    with capturing(model, ["output"]) as cap:  # float32, the same eval mode
        exact = cap.plan(x)["output"]
    assert not torch.equal(out, exact)  # it did run in bfloat16 ...
    assert torch.allclose(out, exact, atol=0.05, rtol=0.05)  # ... close to float32
    result = _run(model, precision="bf16")
    assert torch.isfinite(result.input).all() and result.history["objective"].dtype == torch.float32


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(FvisError, match="unknown precision 'fp16': choose from fp32, bf16"):
        _run(_tiny(), precision="fp16")
