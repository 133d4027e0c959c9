#!/usr/bin/env python3
"""PyTorch reference for the parity tests (tests/integration/model.rs, tests/integration/cli.rs).

Builds each network in PyTorch — the seed's written here from docs/MODEL.md (with its two
fixes: logits out, adaptive average pool), GoogLeNet from torchvision — randomises its weights
and BatchNorm statistics, and writes for each case into OUT:

  NAME.safetensors      the state_dict
  NAME.io.safetensors   `input` [N, 3, S, S] and the eval-mode `logits`
  cases.json            per case: arch, classes, image size, transform_input, state_dict keys,
                        trainable parameters, and the MACs of one image counted independently
                        (forward hooks on every Conv2d and Linear)

Optionally, `--predict CASE IMAGE...` runs torchvision's eval transform (Resize, CenterCrop,
ToTensor, Normalize) on images and the case's network on them: it writes the transformed batch
(`input`) and the `logits` to a safetensors file and prints its path and each image's
probabilities as JSON.

`--transform SIZE IMAGE...` writes only torchvision's eval transform of the images (`input`) and
prints the file's path.

Usage: python3 scripts/parity.py --out DIR [--predict CASE IMAGE... | --transform SIZE IMAGE...]
"""

import argparse
import json
import os

import torch
import torch.nn as nn
import torchvision
from safetensors.torch import save_file


class inception_block(nn.Module):
    """The seed's block, as MODEL.md gives it (branch 3 with a 3x3 conv)."""

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = nn.Sequential(
            nn.Conv2d(in_channels, ch1x1, kernel_size=1), nn.BatchNorm2d(ch1x1), nn.ReLU(inplace=True)
        )
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_channels, ch3x3red, kernel_size=1), nn.BatchNorm2d(ch3x3red), nn.ReLU(inplace=True),
            nn.Conv2d(ch3x3red, ch3x3, kernel_size=3, padding=1), nn.BatchNorm2d(ch3x3), nn.ReLU(inplace=True),
        )
        self.branch3 = nn.Sequential(
            nn.Conv2d(in_channels, ch5x5red, kernel_size=1), nn.BatchNorm2d(ch5x5red), nn.ReLU(inplace=True),
            nn.Conv2d(ch5x5red, ch5x5, kernel_size=3, padding=1), nn.BatchNorm2d(ch5x5), nn.ReLU(inplace=True),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
            nn.Conv2d(in_channels, pool_proj, kernel_size=1), nn.BatchNorm2d(pool_proj), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class SeedInceptionV1(nn.Module):
    """The seed's InceptionV1 (MODEL.md), returning logits, with an adaptive average pool."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=1, stride=1, padding=1)
        self.conv3 = nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1)
        self.maxpool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.inception3a = inception_block(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = inception_block(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.inception4a = inception_block(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = inception_block(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = inception_block(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = inception_block(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = inception_block(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.inception5a = inception_block(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = nn.Sequential(
            inception_block(832, 384, 192, 384, 48, 128, 128),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Dropout(0.4),
        )
        self.classifier = nn.Sequential(
            nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, num_classes)
        )

    def forward(self, x):
        x = self.maxpool1(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = self.maxpool2(torch.relu(self.conv3(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for block in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = block(x)
        x = self.maxpool4(x)
        x = self.inception5b(self.inception5a(x))
        return self.classifier(torch.flatten(x, 1))


# name, arch, classes, image size, batch, transform_input
CASES = [
    ("seed_2", "seed", 2, 224, 2, False),
    ("seed_10", "seed", 10, 160, 2, False),
    ("googlenet_2", "googlenet", 2, 224, 2, False),
    ("googlenet_10", "googlenet", 10, 160, 2, False),
    ("googlenet_tf_10", "googlenet", 10, 224, 1, True),
]


def build(arch, classes, transform_input):
    if arch == "seed":
        return SeedInceptionV1(classes)
    return torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=True, transform_input=transform_input,
        num_classes=classes,
    )


def randomise(model, gen):
    """Random weights (He-normal, so that activations keep their scale through the depth and the
    logits depend on the input), biases, BatchNorm affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(0, 1000, (1,), generator=gen)))


def count_macs(model, x):
    """MACs of one image: k*k*c_in/groups*c_out*H_out*W_out per conv, in*out per linear."""
    total = [0]

    def conv_hook(m, _inp, out):
        kh, kw = m.kernel_size
        total[0] += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m, _inp, _out):
        total[0] += m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total[0]


def make_case(out, name, arch, classes, size, batch, transform_input):
    torch.manual_seed(sum(map(ord, name)))
    gen = torch.Generator().manual_seed(len(name))
    model = build(arch, classes, transform_input)
    randomise(model, gen)
    model.eval()
    x = torch.randn(batch, 3, size, size, generator=gen)
    with torch.no_grad():
        logits = model(x)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, f"{name}.safetensors"))
    save_file({"input": x, "logits": logits}, os.path.join(out, f"{name}.io.safetensors"))
    # The MAC count and parameter count of the inference network (aux heads never run then).
    params = sum(p.numel() for n, p in model.named_parameters())
    aux_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("aux"))
    return {
        "name": name, "arch": arch, "classes": classes, "image_size": size,
        "transform_input": transform_input, "keys": sorted(state),
        "params": params, "aux_params": aux_params, "macs": count_macs(model, x),
    }


def eval_transform(size):
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(size * 256 // 224),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def transform(out, size, images):
    """torchvision's eval transform of `images`, saved as `input` [N, 3, size, size]."""
    from PIL import Image

    tf = eval_transform(size)
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    path = os.path.join(out, f"transform-{os.getpid()}.safetensors")
    save_file({"input": x}, path)
    return path


def predict(out, case_name, images):
    """Probabilities of torchvision's eval pipeline on `images` under a case's weights."""
    from PIL import Image
    from safetensors.torch import load_file

    case = next(c for c in CASES if c[0] == case_name)
    _, arch, classes, size, _, transform_input = case
    model = build(arch, classes, transform_input)
    model.load_state_dict(load_file(os.path.join(out, f"{case_name}.safetensors")))
    model.eval()
    tf = eval_transform(size)
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        logits = model(x)
    save_file({"input": x, "logits": logits}, os.path.join(out, f"predict-{os.getpid()}.safetensors"))
    probs = torch.softmax(logits, dim=1)
    return {
        "tensors": os.path.join(out, f"predict-{os.getpid()}.safetensors"),
        "probabilities": {p: row.tolist() for p, row in zip(images, probs)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--predict", nargs="+", metavar=("CASE", "IMAGE"))
    ap.add_argument("--transform", nargs="+", metavar=("SIZE", "IMAGE"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    if args.transform:
        print(transform(args.out, int(args.transform[0]), args.transform[1:]))
        return
    if args.predict:
        print(json.dumps(predict(args.out, args.predict[0], args.predict[1:])))
        return
    cases = [make_case(args.out, *c) for c in CASES]
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump({"torch": torch.__version__, "torchvision": torchvision.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
