"""Logit and stripes-CAV projection of the steered espresso renders (no transforms), and their contact sheet:
    python results/tcav/steer/measure.py   (from the repository root)"""
import torch, fvis
from fvis.io import load_image
from fvis.files import contact_sheet
from fvis.hooks import Capture, frozen
from fvis.concepts.objective import parse_cav
import objectives
m = fvis.load("efficientnet-lite0")
F = "results/tcav/espresso/cavs.safetensors"
cav, logit = parse_cav(f"cav:{F}:stripes"), objectives.class_logit("espresso")
imgs, labels = [], []
for name in ("plain", "toward_stripes", "away_stripes", "toward_stripes_w2"):
    x = load_image(f"results/tcav/steer/{name}/logit_espresso.png")[None]
    with torch.no_grad(), frozen(m), Capture(m, [*cav.layers, *logit.layers], truncate=False) as cap:
        a = cap.forward(x)
        p, l = cav(a).item(), logit(a).item()
        prob = a["output"].softmax(1)[0, 967].item()
    print(f"| {name} | {l:.1f} | {prob:.3f} | {p:.1f} |")
    imgs.append(x[0]); labels.append(f"{name}: logit {l:.0f}, stripes {p:.0f}")
contact_sheet(imgs, labels, "results/tcav/steer/contact_sheet.png")
