"""Classify images with a module written by `inception export`, in plain PyTorch: what a serving
engine's handler does. Reads MODEL.ts and its preprocessing MODEL.ts.json.

    python3 scripts/torchscript_predict.py model.ts img.jpg [img2.png ...]
    python3 scripts/torchscript_predict.py model.ts --tensor input.safetensors

Prints JSON: for images, a list of {path, class, probability, probabilities}; with --tensor (a
safetensors file whose tensor "input" is a normalised [N, 3, S, S] batch), {"logits": [...]}, the
module's raw output, which the tests compare with `inception predict`.
"""

import argparse
import json

import torch


def preprocess(spec, path):
    from PIL import Image
    from torchvision import transforms

    t = transforms.Compose([
        transforms.Resize(spec["resize_shorter_side"]),
        transforms.CenterCrop(spec["image_size"]),
        transforms.ToTensor(),
        transforms.Normalize(spec["mean"], spec["std"]),
    ])
    with Image.open(path) as img:
        return t(img.convert("RGB"))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("images", nargs="*")
    ap.add_argument("--tensor", help="a safetensors file with a normalised batch named input")
    a = ap.parse_args()
    spec = json.load(open(a.model + ".json"))
    module = torch.jit.load(a.model, map_location="cpu").eval()
    with torch.no_grad():
        if a.tensor:
            from safetensors.torch import load_file

            x = load_file(a.tensor)["input"]
            print(json.dumps({"logits": module(x).tolist()}))
            return
        x = torch.stack([preprocess(spec, p) for p in a.images])
        probs = torch.softmax(module(x), dim=1)
    out = []
    for path, p in zip(a.images, probs.tolist()):
        best = max(range(len(p)), key=p.__getitem__)
        out.append({"path": path, "class": spec["classes"][best], "probability": p[best],
                    "probabilities": dict(zip(spec["classes"], p))})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
