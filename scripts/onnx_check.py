#!/usr/bin/env python3
"""Checks a model `inception export --format onnx` wrote, with the `onnx` and `onnxruntime`
packages (scripts/requirements-onnx.txt; scripts/deps.sh installs them into .deps/onnx):

  - onnx.checker.check_model(full_check=True) and strict shape inference pass;
  - ONNX Runtime (CPU, basic and full graph optimisation) runs it at batch 1 and at the whole
    batch of INPUT, whose logits and probabilities are compared with the tool's (REF_LOGITS,
    REF_PROBS): max absolute and relative differences, and whether the top-5 (or all classes)
    order agrees;
  - metadata_props read back, every value with json.loads.

Usage: onnx_check.py MODEL.onnx INPUT.f32 REF_LOGITS.f32 REF_PROBS.f32 N C S [TOL]
(raw little-endian float32 files: INPUT [N, 3, S, S], the references [N, C]); TOL (an fp16
model's): logits within rtol TOL and atol 5·TOL, probabilities within atol TOL, and the same
top-1.
Prints one JSON object on stdout.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    path, x_file, z_file, p_file = sys.argv[1:5]
    n, c, s = (int(v) for v in sys.argv[5:8])
    tol = float(sys.argv[8]) if len(sys.argv) > 8 else None
    x = np.fromfile(x_file, dtype="<f4").reshape(n, 3, s, s)
    z_ref = np.fromfile(z_file, dtype="<f4").reshape(n, c)
    p_ref = np.fromfile(p_file, dtype="<f4").reshape(n, c)

    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    outputs = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]
        for o in inferred.graph.output
    }
    metadata = {p.key: json.loads(p.value) for p in model.metadata_props}

    k = 1 if tol else min(5, c)
    z_tol = dict(rtol=tol, atol=5 * tol) if tol else dict(rtol=1e-4, atol=1e-5)
    p_tol = dict(rtol=0, atol=tol) if tol else dict(rtol=1e-4, atol=1e-5)
    result = {"checker": "ok", "outputs": outputs, "metadata": metadata,
              "opset": model.opset_import[0].version, "runs": []}
    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    for level_name, level in levels.items():
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for batch in sorted({1, n}):
            z, p = sess.run(["logits", "probabilities"], {"input": x[:batch]})
            zr, pr = z_ref[:batch], p_ref[:batch]
            top = lambda a: np.argsort(-a, axis=1, kind="stable")[:, :k]
            result["runs"].append({
                "optimisation": level_name,
                "batch": batch,
                "shape": list(z.shape),
                "logits_max_abs": float(np.abs(z - zr).max()),
                "logits_close": bool(np.allclose(z, zr, **z_tol)),
                "probabilities_max_abs": float(np.abs(p - pr).max()),
                "probabilities_close": bool(np.allclose(p, pr, **p_tol)),
                "top_k": k,
                "top_k_equal": bool((top(z) == top(zr)).all()),
            })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
