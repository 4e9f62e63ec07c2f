"""Same seed, same bytes on the CPU: SHA-256 of what ``fvis render``, ``fvis attack`` and
``make_prototypes`` produce on small settings, recorded with the code before the issue-18
reshaping. A refactoring that changes any of these bytes changed behaviour.

The hashes were recorded with two CPU threads (this project's CI machine); float reductions split
over another thread count round differently, so every test here runs on two threads whatever the
environment says (``OMP_NUM_THREADS=1`` included).

The prototype hash pins explicit settings (match="bn", high_freq=10, init="equidistant") so that
a change of defaults does not move it. Prototype internals may be changed on purpose (issue 17):
then ``PROTOTYPE`` is re-recorded in a commit of its own that says why.
"""
import hashlib

import pytest
import torch
from PIL import Image

from fvis.cli import main
from fvis.prototype import make_prototypes

RENDER = {
    "channel__blocks.2_3.png": "6b1a5ecc86e6f44022319948dfe4cde5b4d58f0b0d10b6b42e0b613da857e73e",
    "logit_goldfinch.png": "0d9fcdaeadc514fe58e29033416c687a1960d1e207dc93e5699f8ba0356baba8",
}
ATTACK = {
    "cup_adv.png": "5144a8183bbc71626615073039b0b672fa82442e2f9cd91ed64d8650a77e5287",
    "cup_delta.png": "f681a47c6de1ea013b1bac446479b951ed2bf543c0062283b8a5dc9ba146db07",
}
PROTOTYPE = "5177f61a03fcbe7e72faa71c859762c79c43b26262809ef20cb81b66932cb761"


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_render_bytes(tmp_path):
    out = tmp_path / "out"
    assert main(["render", "--model", "efficientnet-lite0", "-o", "channel:_blocks.2:3", "-o", "logit:goldfinch",
                 "--size", "64", "--steps", "6", "--seed", "0", "--quiet", "--out", str(out)]) == 0
    assert {name: sha(out / name) for name in RENDER} == RENDER


def test_attack_bytes(tmp_path, coffee):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((coffee[:, :96, :96].permute(1, 2, 0) * 255).round().byte().numpy()).save(folder / "cup.png")
    out = tmp_path / "out"
    assert main(["attack", "--model", "efficientnet-lite0", "--images", str(folder), "--target", "goldfinch",
                 "--eps", "4/255", "--steps", "6", "--heldout", "0", "--no-early-stop", "--seed", "0", "--quiet",
                 "--out", str(out)]) == 0
    assert {name: sha(out / name) for name in ATTACK} == ATTACK


def test_prototype_bytes(lite0):
    protos = make_prototypes(lite0, [94, 1], recipe="lucent", per_class=1, steps=8, match="bn", param="fourier",
                             init="equidistant", size=64, lr=0.05, seed=0, high_freq=10.0, tv=0.0, diversity=0.0,
                             heldout=0, progress=False)
    pixels = torch.stack([p.image for p in protos]).mul(255).round().to(torch.uint8)
    assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest() == PROTOTYPE
