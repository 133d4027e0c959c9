#!/usr/bin/env python3
"""PyTorch reference for `inception explain` (tests/integration/explain.rs): Grad-CAM (Selvaraju et al. 2017,
arXiv:1610.02391) and Grad-CAM++ (Chattopadhay et al. 2018, arXiv:1710.11063) with forward and
tensor hooks on the network of scripts/parity.py, written here from the papers (the weighting of
Grad-CAM++ as pytorch-grad-cam computes it).

    python3 scripts/gradcam.py --arch googlenet --classes 2 --weights W.safetensors \
        --input X.safetensors --layer inception5b --method gradcam --out MAPS.safetensors

X holds `input` [N, 3, S, S] (normalised, as the tool feeds its network) and `classes` [N] (the
class to explain per image). MAPS gets `maps` [N, S, S] (and `maps.METHOD` for each method asked): ReLU of the weighted sum of the layer's
activations, upsampled bilinearly (align_corners=False) to the input size, then scaled to [0, 1]
per image ((m - min) / (max - min + 1e-7)), and the network's `logits`.
"""

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parity  # noqa: E402


def module_at(model, arch, layer):
    if arch == "seed" and layer == "inception5b":
        return model.inception5b[0]  # the seed wraps 5b in a Sequential
    return getattr(model, layer)


def cam(model, arch, x, classes, layer, method):
    saved = {}
    handle = module_at(model, arch, layer).register_forward_hook(
        lambda _m, _i, out: saved.__setitem__("a", out))
    logits = model(x)
    handle.remove()
    a = saved["a"]
    score = logits.gather(1, classes.view(-1, 1)).sum()
    (g,) = torch.autograd.grad(score, a)
    a = a.detach()
    if method == "gradcam":
        w = g.mean(dim=(2, 3), keepdim=True)
    else:
        g2, g3 = g ** 2, g ** 3
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        aij = g2 / (2 * g2 + sum_a * g3 + 1e-7)
        aij = torch.where(g != 0, aij, torch.zeros_like(aij))
        w = (torch.relu(g) * aij).sum(dim=(2, 3), keepdim=True)
    m = torch.relu((w * a).sum(dim=1, keepdim=True))
    m = F.interpolate(m, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    return (m - lo) / (hi - lo + 1e-7), logits.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["seed", "googlenet"])
    ap.add_argument("--classes", type=int, required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--layer", default="inception5b")
    ap.add_argument("--method", default="gradcam",
                    help="gradcam, gradcam++, or both comma-separated (one process, one import)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    model = parity.build(a.arch, a.classes, False)
    missing, _ = model.load_state_dict(load_file(a.weights), strict=False)
    if missing:
        sys.exit(f"weights lack {missing}")
    model.eval()
    t = load_file(a.input)
    out = {}
    for method in a.method.split(","):
        if method not in ("gradcam", "gradcam++"):
            sys.exit(f"--method {method!r}: gradcam or gradcam++")
        maps, logits = cam(model, a.arch, t["input"], t["classes"].long(), a.layer, method)
        out.setdefault("maps", maps.contiguous().clone())
        out[f"maps.{method}"] = maps.contiguous()
        out["logits"] = logits.contiguous()
    save_file(out, a.out)


if __name__ == "__main__":
    main()
