#!/usr/bin/env python3
"""PyTorch's side of the weights tests (tests/integration/weights.rs): torch.save files, good and bad.

Writes into OUT:

  small.zip.pth, small.legacy.pth   one state_dict of mixed dtypes (f32, f64, f16, bf16, i64,
                                    u8, bool, a 0-d tensor, a non-contiguous view, two tensors
                                    sharing a storage) in the zip format and the legacy stream;
                                    small.safetensors the same tensors, contiguous, for reference
  small.p4.zip.pth, small.p4.legacy.pth   the same saved at pickle protocol 4 (which
                                    torch.load(weights_only=True) itself cannot read back)
  nested.pth                        {"epoch": 3, "args": {...}, "state_dict": small}
  googlenet.legacy.pth              a random torchvision GoogLeNet (aux heads on) as torchvision's
                                    published file is: legacy format; googlenet.io.safetensors
                                    its eval logits (aux off, transform_input on) for an input
  evil.pth                          a state_dict whose one entry is a call of os.system that
                                    would create `pwned` in the reader's working folder if it
                                    were ever run
  scripted.pt                       a TorchScript archive (torch.jit.save)
  past_storage.pth                  a tensor whose view reaches past its storage
  expanded.pth                      a 1-element storage expanded to 2^31 elements (8 GiB)
  many_views.pth                    64 views of one 1-element storage, each 1 KiB: small alone,
                                    together many times the file
  deep.pth                          a tensor beside a dict nested 200 levels deep
  truncated.legacy.pth              small.legacy.pth cut short in its last storage
  list.pth                          a list of tensors, not a dict

With --lite0 PTH, writes instead lite0.io.safetensors: an input batch and the reference
EfficientNet-Lite0's (PyPI efficientnet-lite-pytorch) eval logits with the weights in PTH.

Usage: python3 scripts/pth_fixtures.py --out DIR [--lite0 PTH]
"""

import argparse
import collections
import os
import sys

import torch
from safetensors.torch import save_file


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class PastStorage:
    """Pickles as a tensor rebuilt at offset 8 with 10 elements of a 10-element storage."""

    def __init__(self):
        self.storage = torch.arange(10, dtype=torch.float32).untyped_storage()

    def __reduce__(self):
        typed = torch.storage.TypedStorage(wrap_storage=self.storage, dtype=torch.float32, _internal=True)
        return (torch._utils._rebuild_tensor_v2, (typed, 8, (10,), (1,), False, collections.OrderedDict()))


def small():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    shared = torch.randn(12, generator=g)
    return collections.OrderedDict(
        [
            ("conv.weight", torch.randn(3, 2, 3, 3, generator=g)),
            ("double", torch.randn(5, generator=g).double()),
            ("half", torch.randn(7, generator=g).half()),
            ("bf16", torch.randn(7, generator=g).bfloat16()),
            ("bn.num_batches_tracked", torch.tensor(17)),
            ("index", torch.arange(-3, 5)),
            ("bytes", torch.arange(0, 250, 25, dtype=torch.uint8)),
            ("mask", torch.tensor([True, False, True])),
            ("transposed", base.t()),
            ("shared.a", shared[:6]),
            ("shared.b", shared[6:].view(2, 3)),
        ]
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--lite0")
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    if args.lite0:
        sys.path.insert(0, os.path.join(os.path.dirname(torch.__file__), ".."))
        from efficientnet_lite_pytorch import EfficientNet

        m = EfficientNet.from_name("efficientnet-lite0")
        m.load_state_dict(torch.load(args.lite0, map_location="cpu", weights_only=True))
        m.eval()
        x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        macs = [0]

        def count(mod, inp, outp):
            if isinstance(mod, torch.nn.Conv2d):
                # outp[0]: the first image's output map.
                k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
                macs[0] += outp[0].numel() * k
            elif isinstance(mod, torch.nn.Linear):
                macs[0] += mod.in_features * mod.out_features

        for mod in m.modules():
            mod.register_forward_hook(count)
        with torch.no_grad():
            y = m(x)
        params = sum(p.numel() for p in m.parameters())
        save_file(
            {
                "input": x,
                "logits": y,
                "params": torch.tensor(params),
                "macs": torch.tensor(macs[0]),
            },
            os.path.join(out, "lite0.io.safetensors"),
        )
        return

    sd = small()
    torch.save(sd, os.path.join(out, "small.zip.pth"))
    torch.save(sd, os.path.join(out, "small.legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(out, "small.p4.zip.pth"), pickle_protocol=4)
    torch.save(sd, os.path.join(out, "small.p4.legacy.pth"), pickle_protocol=4, _use_new_zipfile_serialization=False)
    save_file({k: v.contiguous().clone() for k, v in sd.items()}, os.path.join(out, "small.safetensors"))
    torch.save(
        {"epoch": 3, "args": {"lr": 0.1, "names": ["a", "b"], "flag": None}, "state_dict": sd},
        os.path.join(out, "nested.pth"),
    )

    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, num_classes=1000)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    torch.save(net.state_dict(), os.path.join(out, "googlenet.legacy.pth"), _use_new_zipfile_serialization=False)
    net.aux_logits = False
    net.aux1 = None
    net.aux2 = None
    net.transform_input = True
    net.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = net(x)
    save_file({"input": x, "logits": y}, os.path.join(out, "googlenet.io.safetensors"))

    torch.save({"weight": torch.ones(2), "payload": Evil("pwned")}, os.path.join(out, "evil.pth"))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(out, "scripted.pt"))
    torch.save({"w": PastStorage()}, os.path.join(out, "past_storage.pth"))
    torch.save({"w": torch.zeros(1).expand(2**31)}, os.path.join(out, "expanded.pth"))
    one = torch.zeros(1)
    torch.save({f"v{i}": one.expand(256) for i in range(64)}, os.path.join(out, "many_views.pth"))
    deep = {"w": torch.ones(3)}
    d = deep
    for _ in range(200):
        d["next"] = {}
        d = d["next"]
    torch.save(deep, os.path.join(out, "deep.pth"))
    data = open(os.path.join(out, "small.legacy.pth"), "rb").read()
    open(os.path.join(out, "truncated.legacy.pth"), "wb").write(data[: len(data) - 9])
    torch.save([torch.ones(2), torch.zeros(2)], os.path.join(out, "list.pth"))


if __name__ == "__main__":
    main()
