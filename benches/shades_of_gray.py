"""A copy of an ImageFolder dataset with Shades-of-Gray colour constancy applied to each image.

Shades of Gray (Finlayson & Trezzi 2004), Minkowski norm p = 6, as skin-lesion classifiers use it
to take the light's colour out of photos (Barata et al. 2015; ISIC 2019 entries): the
illuminant e_c = (mean over pixels of I_c^p)^(1/p), normalised to unit length, and each channel
divided by sqrt(3)·e_c. Images are written as PNG (no second JPEG loss) under the same class
folders and file stems, so that patient grouping by file name still holds.

    PYTHONPATH=.deps/py python3 benches/shades_of_gray.py data/monkeypox /tmp/sog/monkeypox
    DATA=/tmp/sog/monkeypox scripts/cv-sweep.sh sog

A benchmark of whether the preprocessing would pay (README, "Recipes tried"), not part of the tool.
"""
import os
import sys

import numpy as np
from PIL import Image

P = 6.0


def shades_of_gray(rgb: np.ndarray, p: float = P) -> np.ndarray:
    a = rgb.astype(np.float64)
    e = np.power(np.mean(np.power(a, p), axis=(0, 1)), 1 / p)
    e = e / np.linalg.norm(e)
    return np.clip(a / (e * np.sqrt(3)), 0, 255).round().astype(np.uint8)


def main(src: str, dst: str) -> None:
    n = 0
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            rgb = np.asarray(Image.open(os.path.join(root, f)).convert("RGB"))
            out = os.path.join(dst, os.path.relpath(root, src))
            os.makedirs(out, exist_ok=True)
            Image.fromarray(shades_of_gray(rgb)).save(
                os.path.join(out, os.path.splitext(f)[0] + ".png"))
            n += 1
    print(f"{n} images → {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
