#!/usr/bin/env python3
"""Side by side on one machine: PyTorch eager baselines and inception, same data, same network.

Baselines (PyTorch from PyPI, the seed network of scripts/parity.py, batch 32, 224x224):
  - seed-style: fp32, default layout, torchvision ImageFolder + DataLoader (num_workers=1,
    as the seed tutorial), RandomResizedCrop + flip for training;
  - channels-last;
  - channels-last + bf16 autocast.
Measured: training steps per second in steady state (data included; the first 2 steps are
left out) and inference over the whole dataset (eval transform, no_grad), as images/s.

inception: `inception train --arch seed` (images/s of the last epochs in metrics.csv: whole
steps, data included), `inception eval --data` (images/s from reading the files to the
probabilities: decoding, preprocessing and the network, as the PyTorch loop), and
`inception predict one.jpg` from process start to answer, against a Python script that loads
the same weights (the checkpoint is a safetensors state_dict) and predicts the same image.

ONNX Runtime: the tool's network exported with `inception export --format onnx` (fp32, and
int8 with `--int8 --calib DATA`), run
by ONNX Runtime's CPU execution provider at full graph optimisation with threads = cores, over
the same loader at batch 32 and 1, beside `inception eval` at those batches, and a cold
one-photo predict from a Python script (onnx and onnxruntime from .deps/onnx).

Usage: PYTHONPATH=.deps/onnx:.deps/py python3 benches/side_by_side.py [--data DIR] [--steps N] [--profile]
[--device cpu|cuda] (make bench runs it on the CPU; scripts/gpu-check.sh on CUDA, where the
third baseline is PyTorch AMP + channels-last: bf16 autocast on compute capability >= 8.0, else
fp16 autocast with torch.amp.GradScaler, the choice inception's --precision auto makes). Prints a table with ratios against the seed-style baseline. --profile also
prints where a PyTorch channels-last + bf16 training step spends its time, by operator
(torch.profiler): the same libtorch kernels inception calls.
"""

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn as nn
from torchvision import datasets, transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from parity import SeedInceptionV1  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

PREDICT_ONE = r"""
import sys, torch
from PIL import Image
from safetensors.torch import load_file
from torchvision import transforms
sys.path.insert(0, sys.argv[3])
from parity import SeedInceptionV1
model = SeedInceptionV1(2)
model.load_state_dict(load_file(sys.argv[1]))
model.eval()
tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                         transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
x = tf(Image.open(sys.argv[2]).convert("RGB")).unsqueeze(0)
with torch.no_grad():
    p = torch.softmax(model(x), 1)[0]
print(sys.argv[2], int(p.argmax()), float(p.max()))
"""

ORT_PREDICT_ONE = r"""
import json, sys, numpy as np, onnxruntime as ort
from PIL import Image
from torchvision import transforms
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
m = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
tf = transforms.Compose([transforms.Resize(m["resize_shorter_side"]), transforms.CenterCrop(m["image_size"]),
                         transforms.ToTensor(), transforms.Normalize(m["mean"], m["std"])])
x = tf(Image.open(sys.argv[2]).convert("RGB")).unsqueeze(0).numpy()
p = sess.run(["probabilities"], {"input": x})[0][0]
print(sys.argv[2], m["classes"][int(p.argmax())], float(p.max()))
"""


def loaders(data, batch, size, pin=False):
    train_tf = transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])
    eval_tf = transforms.Compose([
        transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
        transforms.ToTensor(), transforms.Normalize(MEAN, STD),
    ])
    train = torch.utils.data.DataLoader(
        datasets.ImageFolder(data, train_tf), batch_size=batch, shuffle=True, num_workers=1,
        drop_last=True, pin_memory=pin)
    evals = torch.utils.data.DataLoader(
        datasets.ImageFolder(data, eval_tf), batch_size=batch, shuffle=False, num_workers=1,
        pin_memory=pin)
    return train, evals


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def trainer(channels_last, amp, device="cpu"):
    """A seed network in training mode with AdamW, and its training step on a batch (x, y).
    amp: None (fp32), torch.bfloat16 or torch.float16 (then with a GradScaler)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = SeedInceptionV1(2).to(device=device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device, enabled=amp == torch.float16)

    def step(x, y):
        x = x.to(device, non_blocking=True).to(memory_format=fmt)
        y = y.to(device, non_blocking=True)
        with torch.autocast(device, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def torch_train(data, batch, size, steps, channels_last, amp, device):
    train, _ = loaders(data, batch, size, pin=device == "cuda")
    step = trainer(channels_last, amp, device)
    done, start = 0, None
    while done < steps + 2:
        for x, y in train:
            if done == 2:
                sync(device)
                start = time.perf_counter()
            step(x, y)
            done += 1
            if done == steps + 2:
                break
    sync(device)
    return steps * batch / (time.perf_counter() - start)


def torch_infer(data, batch, size, channels_last, amp, device):
    _, evals = loaders(data, batch, size, pin=device == "cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = SeedInceptionV1(2).to(device=device, memory_format=fmt).eval()
    n, start = 0, time.perf_counter()
    with torch.no_grad(), torch.autocast(device, dtype=amp or torch.bfloat16,
                                         enabled=amp is not None):
        for x, _ in evals:
            model(x.to(device, non_blocking=True).to(memory_format=fmt))
            n += len(x)
    sync(device)
    return n / (time.perf_counter() - start)


def ort_session(path):
    """ONNX Runtime on the CPU, full graph optimisation, threads = cores."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = os.cpu_count() or 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_infer(path, data, batch, size):
    """ONNX Runtime over the whole dataset, as torch_infer: the same loader and eval transform
    (decoding included), images/s."""
    _, evals = loaders(data, batch, size)
    sess = ort_session(path)
    n, start = 0, time.perf_counter()
    for x, _ in evals:
        sess.run(["probabilities"], {"input": x.numpy()})
        n += len(x)
    return n / (time.perf_counter() - start)


def profile_step(batch, size):
    """Self time by operator of two channels-last + bf16 training steps, synthetic data."""
    from torch.profiler import ProfilerActivity, profile
    step = trainer(channels_last=True, amp=torch.bfloat16)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    step(x, y)
    step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
        step(x, y)
    print("\nPyTorch channels-last + bf16 training step, by operator (self time of 2 steps):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out


def best_time(cmd, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run(cmd)
        best = min(best, time.perf_counter() - t)
    return best


def first_image(data):
    """The first image of the first class folder: a dataset folder may also hold files (MSLD's
    LICENSE), which are no class."""
    for cls in sorted(os.listdir(data)):
        folder = os.path.join(data, cls)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".webp")):
                return os.path.join(folder, name)
    sys.exit(f"side_by_side.py: no class folder with an image in {data}")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(root, "data", "monkeypox"))
    ap.add_argument("--bin", default=os.path.join(root, "target", "release", "inception"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=9,
                    help="timed PyTorch training steps (inception times 2 epochs: 10 batches on MSLD)")
    ap.add_argument("--profile", action="store_true",
                    help="print an operator profile of a channels-last + bf16 training step")
    ap.add_argument("--epochs", type=int, default=3, help="inception training epochs (the last two are timed)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each process-start-to-answer timing (the best is shown)")
    args = ap.parse_args()
    # The tool runs in a temporary folder: paths as given (make bench's data/monkeypox) would
    # not resolve there.
    args.data, args.bin = os.path.abspath(args.data), os.path.abspath(args.bin)
    torch.set_num_threads(os.cpu_count() or 1)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    bf16_cpu = "avx512_bf16" in flags or "amx_bf16" in flags
    dev = args.device
    amp = torch.bfloat16
    if dev == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: PyTorch sees no CUDA device")
        major, minor = torch.cuda.get_device_capability(0)
        amp = torch.bfloat16 if major >= 8 else torch.float16
        torch.backends.cudnn.benchmark = True
        cpu += f"; {torch.cuda.get_device_name(0)} (capability {major}.{minor})"
    amp_name = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[amp]
    print(f"{time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores, CPU bf16: {bf16_cpu}, "
          f"torch {torch.__version__}, device {dev}, batch {args.batch}, {args.size}x{args.size}, "
          f"data {args.data}")

    rows = []
    for name, cl, a in [("PyTorch fp32 (seed-style)", False, None),
                        ("PyTorch channels-last", True, None),
                        (f"PyTorch channels-last + {amp_name}", True, amp)]:
        rows.append((name, torch_train(args.data, args.batch, args.size, args.steps, cl, a, dev),
                     torch_infer(args.data, args.batch, args.size, cl, a, dev)))
        print(f"  measured {name}", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        # eval and predict always compute in channels-last; only training takes the default layout.
        for name, extra in [("inception fp32 (train default layout)",
                             ["--precision", "fp32", "--channels-last", "false"]),
                            ("inception (auto precision, channels-last)", [])]:
            out = os.path.join(tmp, name.split()[1].strip("()").replace(",", ""))
            run([args.bin, "train", "--data", args.data, "--arch", "seed", "--aux-logits", "false",
                 "--image-size", str(args.size), "--batch-size", str(args.batch), "--epochs",
                 str(args.epochs), "--device", dev, "--out", out] + extra, cwd=tmp)
            with open(os.path.join(out, "metrics.csv")) as f:
                rates = [float(r["images_per_s"]) for r in csv.DictReader(f)][1:]
            ckpt = os.path.join(out, "best.pt")
            prec = ["--precision", "fp32"] if extra else []
            ev = json.loads(run([args.bin, "eval", "--checkpoint", ckpt, "--data", args.data,
                                 "--json", "--device", dev] + prec, cwd=tmp).stdout)
            rows.append((name, sum(rates) / len(rates), ev["images_per_s"]))
            print(f"  measured {name}", file=sys.stderr)

        one = first_image(args.data)
        # Inference at batch 32 and 1: the tool's eval (fp32 and auto precision) against ONNX
        # Runtime on the same network, exported by the tool (fp32).
        model_onnx = os.path.join(tmp, "model.onnx")
        run([args.bin, "export", "--format", "onnx", "--dynamic-batch", "--checkpoint", ckpt,
             "--out", model_onnx], cwd=tmp)
        # int8, calibrated on the first 300 images of the data (sorted by path).
        model_int8 = os.path.join(tmp, "model-int8.onnx")
        run([args.bin, "export", "--format", "onnx", "--dynamic-batch", "--checkpoint", ckpt,
             "--out", model_int8, "--int8", "--calib", args.data], cwd=tmp)
        infer_rows = []
        for b in [args.batch, 1]:
            for name, prec in [("inception eval fp32", ["--precision", "fp32"]),
                               ("inception eval (auto precision)", [])]:
                ev = json.loads(run([args.bin, "eval", "--checkpoint", ckpt, "--data", args.data,
                                     "--json", "--device", "cpu", "--batch-size", str(b)] + prec,
                                    cwd=tmp).stdout)
                infer_rows.append((name, b, ev["images_per_s"]))
            infer_rows.append(("ONNX Runtime fp32 (CPU EP, full optimisation)", b,
                               ort_infer(model_onnx, args.data, b, args.size)))
            infer_rows.append(("ONNX Runtime int8 (the tool's QDQ export)", b,
                               ort_infer(model_int8, args.data, b, args.size)))
            print(f"  measured inference at batch {b}", file=sys.stderr)
        ort_script = os.path.join(tmp, "ort_predict_one.py")
        with open(ort_script, "w") as f:
            f.write(ORT_PREDICT_ONE)
        t_ort = best_time([sys.executable, ort_script, model_onnx, one], args.repeats)
        script = os.path.join(tmp, "predict_one.py")
        with open(script, "w") as f:
            f.write(PREDICT_ONE)
        # Process start to answer, both on the CPU (a CUDA context alone takes longer).
        t_tool = best_time([args.bin, "predict", "--checkpoint", ckpt, "--device", "cpu", one],
                           args.repeats)
        t_py = best_time([sys.executable, script, ckpt, one, os.path.join(root, "scripts")],
                         args.repeats)

    if args.profile:
        profile_step(args.batch, args.size)
    base_train, base_infer = rows[0][1], rows[0][2]
    print(f"\n{'':<44} {'train img/s':>12} {'x':>6} {'infer img/s':>12} {'x':>6}")
    for name, tr, inf in rows:
        print(f"{name:<44} {tr:>12.1f} {tr / base_train:>6.2f} {inf:>12.1f} {inf / base_infer:>6.2f}")
    print(f"\npredict one image, process start to answer: inception {t_tool:.2f} s, "
          f"Python + PyTorch {t_py:.2f} s ({t_py / t_tool:.1f}x), "
          f"Python + ONNX Runtime {t_ort:.2f} s ({t_ort / t_tool:.1f}x)")
    print(f"\n{'inference, the same network (data included)':<48} {'batch':>5} {'img/s':>9} "
          f"{'x ORT':>6}")
    ort_rate = {b: r for name, b, r in infer_rows if name.startswith("ONNX Runtime fp32")}
    for name, b, rate in infer_rows:
        print(f"{name:<48} {b:>5} {rate:>9.1f} {rate / ort_rate[b]:>6.2f}")


if __name__ == "__main__":
    main()
