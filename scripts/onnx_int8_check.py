#!/usr/bin/env python3
"""Measures an int8 model `inception export --format onnx --int8` wrote against the fp32 one, in
ONNX Runtime (CPU, full graph optimisation), on images the tool preprocessed, and against ONNX
Runtime's own post-training static quantisation of the fp32 model (quantize_static, QDQ,
per-channel, MinMax on the same calibration images) as a reference of the same idea:

  - onnx.checker.check_model(full_check=True) on the int8 model;
  - top-1 agreement with fp32 and accuracy of fp32, int8 and the references: ONNX Runtime's
    default (int8 weights, U8S8) and its saturation-free U8U8 (symmetric uint8 weights);
  - whether this CPU's U8S8 kernels saturated on the int8 model: its top-1 against its twin
    with the same weights stored as uint8 (+128, zero point 128), which ONNX Runtime runs with
    U8U8 kernels that cannot saturate (`twin_equal`, 1 when nothing saturated), and the twin's
    agreement and accuracy (what a CPU whose kernels cannot saturate gives);
  - the operators ONNX Runtime runs the int8 model with after optimisation (QLinearConv,
    QGemm…: whether it fused the QDQ pairs into int8 kernels).

Usage: onnx_int8_check.py FP32.onnx INT8.onnx IMAGES.f32 LABELS.i64 N S CALIB_N [INT8.onnx…]
(IMAGES [N, 3, S, S] float32 little-endian, LABELS [N] int64; the first CALIB_N images are the
calibration images both quantisations used). Prints one JSON object per int8 model, one per
line, in the order given (the fp32 model and the references are run once for all).
"""

import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)


def session(path, optimized=None):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized:
        so.optimized_model_filepath = optimized
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def top1(path, x, optimized=None):
    sess = session(path, optimized)
    out = [sess.run(["probabilities"], {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)]
    return np.concatenate(out).argmax(1)


def as_u8u8(model):
    """The model with every int8 initialiser (quantised weights and their zero points) as
    uint8 + 128: the same numbers, run by ONNX Runtime's U8U8 kernels."""
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == onnx.TensorProto.INT8:
            a = numpy_helper.to_array(t).astype(np.int16) + 128
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.uint8), t.name))
    return model


class Reader(CalibrationDataReader):
    def __init__(self, x):
        self.batches = iter([{"input": x[i:i + 8]} for i in range(0, len(x), 8)])

    def get_next(self):
        return next(self.batches, None)


def main():
    fp32, int8, x_file, y_file = sys.argv[1:5]
    n, s, calib = (int(v) for v in sys.argv[5:8])
    int8s = [int8] + sys.argv[8:]
    x = np.fromfile(x_file, dtype="<f4").reshape(n, 3, s, s)
    y = np.fromfile(y_file, dtype="<i8")
    with tempfile.TemporaryDirectory() as tmp:
        a = top1(fp32, x)
        refs = {}
        for name, weights, extra in [("u8s8", QuantType.QInt8, {}),
                                     ("u8u8", QuantType.QUInt8, {"WeightSymmetric": True})]:
            reference = os.path.join(tmp, f"reference-{name}.onnx")
            quantize_static(fp32, reference, Reader(x[:calib]), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=weights, extra_options=extra)
            refs[name] = top1(reference, x)
        r = refs["u8u8"]
        for i, int8 in enumerate(int8s):
            onnx.checker.check_model(onnx.load(int8), full_check=True)
            optimized = os.path.join(tmp, f"optimized-{i}.onnx")
            b = top1(int8, x, optimized)
            ops = collections.Counter(node.op_type for node in onnx.load(optimized).graph.node)
            twin = os.path.join(tmp, f"twin-{i}.onnx")
            onnx.save(as_u8u8(onnx.load(int8)), twin)
            t = top1(twin, x)
            print(json.dumps({
                "agreement": float((a == b).mean()),
                "reference_agreement": float((a == r).mean()),
                "reference_u8s8_agreement": float((a == refs["u8s8"]).mean()),
                "twin_equal": float((b == t).mean()),
                "twin_agreement": float((a == t).mean()),
                "accuracy_twin": float((t == y).mean()),
                "accuracy_fp32": float((a == y).mean()),
                "accuracy_int8": float((b == y).mean()),
                "accuracy_reference": float((r == y).mean()),
                "optimized_ops": dict(ops),
            }))


if __name__ == "__main__":
    main()
