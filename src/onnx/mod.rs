//! ONNX graphs written by the tool itself (libtorch's C++ API has no ONNX exporter): each
//! network emits its eval-mode forward pass into a [`Graph`] — BatchNorm folded into the
//! convolutions in f64, ceil-mode max-pools, no dropout, no auxiliary heads — through the
//! protobuf types generated from the official `onnx.proto` (proto/, compiled by build.rs with
//! protox and prost-build). Spec: https://onnx.ai/onnx/intro/concepts.html and the operator
//! reference https://onnx.ai/onnx/operators/ (opset 17 by default).

pub mod eval;
pub mod half;
pub mod quantize;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

/// The types of `onnx.proto`, generated at build time.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, NodeProto};

/// The opset written unless `--opset` says otherwise.
pub const DEFAULT_OPSET: i64 = 17;
/// The opsets this exporter writes: every operator it uses has the same meaning in all of them
/// (13: Softmax over one axis, ReduceMean with attribute axes up to 17; Clip with inputs).
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// A value of the graph: its name and, for a feature map, its shape `[C, H, W]` (the batch
/// dimension is the graph's input's).
#[derive(Debug, Clone)]
pub struct Value {
    pub name: String,
    pub shape: [i64; 3],
}

/// A graph being written: nodes in order, weights as initialisers.
#[derive(Debug)]
pub struct Graph {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<proto::TensorProto>,
    counter: usize,
    /// Put before the names of weights: each member of an ensemble has its own.
    pub prefix: String,
    /// Initialisers written so far: a network emitted again (another flip) reuses them.
    written: std::collections::HashSet<String>,
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// Output length of a pooling or convolution window along one axis, exactly as PyTorch's
/// `pooling_output_shape` computes it (ceil mode included: a last window that would start in
/// the right padding is dropped). `None` when nothing fits. The networks' layers and the
/// graph's shape inference both use it.
pub fn window_out(input: i64, kernel: i64, stride: i64, padding: i64, ceil: bool) -> Option<i64> {
    let span = input + 2 * padding - (kernel - 1) - 1 + if ceil { stride - 1 } else { 0 };
    if span < 0 {
        return None;
    }
    let mut out = span.div_euclid(stride) + 1;
    if ceil && (out - 1) * stride >= input + padding {
        out -= 1;
    }
    (out >= 1).then_some(out)
}

impl Graph {
    pub fn new(opset: i64) -> Result<Graph> {
        if !OPSETS.contains(&opset) {
            bail!(
                "--opset {opset}: this exporter writes opsets {} to {}",
                OPSETS.start(),
                OPSETS.end()
            );
        }
        Ok(Graph {
            opset,
            nodes: vec![],
            initializers: vec![],
            counter: 0,
            prefix: String::new(),
            written: Default::default(),
        })
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Adds a node of one output named after `hint`; returns the output's name.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let out = self.fresh(hint);
        self.node_named(op, inputs, attributes, &out);
        out
    }

    /// Adds a node whose one output is `out`.
    pub fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        out: &str,
    ) {
        self.nodes.push(NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: Some(format!("{op}_{}", self.nodes.len())),
            attribute: attributes,
            ..Default::default()
        });
    }

    /// An f32 initialiser of `data` with `dims`, named `name` (after the prefix); written once.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        let name = format!("{}{name}", self.prefix);
        if !self.written.insert(name.clone()) {
            return name;
        }
        let name = name.as_str();
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(proto::TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name.to_string()
    }

    /// An int64 initialiser (shapes, axes, slice bounds).
    pub fn init_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(proto::TensorProto {
            name: Some(name.clone()),
            dims: vec![data.len() as i64],
            data_type: Some(DataType::Int64 as i32),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// A tch tensor (any float kind, any device) as an f32 initialiser named `name`.
    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<String> {
        let full = format!("{}{name}", self.prefix);
        if self.written.contains(&full) {
            return Ok(full);
        }
        let t = t
            .f_to_device(tch::Device::Cpu)?
            .f_to_kind(Kind::Float)?
            .f_contiguous()?;
        let dims = t.size();
        let mut data = vec![0f32; t.numel()];
        t.f_copy_data(&mut data, t.numel())
            .with_context(|| format!("copying {name}"))?;
        Ok(self.init_f32(name, &dims, &data))
    }

    /// A scalar f32 constant (a Clip bound).
    pub fn scalar(&mut self, hint: &str, v: f32) -> String {
        let name = self.fresh(hint);
        self.initializers.push(proto::TensorProto {
            name: Some(name.clone()),
            dims: vec![],
            data_type: Some(DataType::Float as i32),
            raw_data: Some(v.to_le_bytes().to_vec()),
            ..Default::default()
        });
        name
    }

    /// A convolution of `x` by the initialisers `w` (`[out, in/groups, k, k]`) and `b`, with
    /// explicit pads `[top, left, bottom, right]`.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        x: &Value,
        w: &str,
        b: &str,
        out_channels: i64,
        kernel: i64,
        stride: i64,
        pads: [i64; 4],
        groups: i64,
    ) -> Result<Value> {
        let [_, h, wd] = x.shape;
        let oh = (h + pads[0] + pads[2] - kernel).div_euclid(stride) + 1;
        let ow = (wd + pads[1] + pads[3] - kernel).div_euclid(stride) + 1;
        if oh < 1 || ow < 1 {
            bail!("{w}: a {h}×{wd} input is too small for a {kernel}×{kernel} convolution");
        }
        let name = self.node(
            "Conv",
            &[&x.name, w, b],
            vec![
                attr_ints("kernel_shape", &[kernel, kernel]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[pads[0], pads[1], pads[2], pads[3]]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", groups),
            ],
            "conv",
        );
        Ok(Value {
            name,
            shape: [out_channels, oh, ow],
        })
    }

    pub fn relu(&mut self, x: &Value) -> Value {
        let name = self.node("Relu", &[&x.name], vec![], "relu");
        Value {
            name,
            shape: x.shape,
        }
    }

    /// `min(max(x, lo), hi)` (ReLU6 with 0 and 6).
    pub fn clip(&mut self, x: &Value, lo: f32, hi: f32) -> Value {
        let (lo, hi) = (self.scalar("lo", lo), self.scalar("hi", hi));
        let name = self.node("Clip", &[&x.name, &lo, &hi], vec![], "clip");
        Value {
            name,
            shape: x.shape,
        }
    }

    /// A max-pool as PyTorch's `max_pool2d` computes it. A ceil-mode pool whose last window
    /// would start in the right or bottom padding is refused: PyTorch drops that window, and
    /// ONNX's shape rule before opset 19 keeps it.
    pub fn max_pool(
        &mut self,
        x: &Value,
        kernel: i64,
        stride: i64,
        pad: i64,
        ceil: bool,
    ) -> Result<Value> {
        let [c, h, w] = x.shape;
        let (Some(oh), Some(ow)) = (
            window_out(h, kernel, stride, pad, ceil),
            window_out(w, kernel, stride, pad, ceil),
        ) else {
            bail!("a {h}×{w} map is too small for a {kernel}×{kernel} max-pool");
        };
        if ceil {
            for (input, out) in [(h, oh), (w, ow)] {
                let onnx = (input + 2 * pad - kernel + stride - 1).div_euclid(stride) + 1;
                if onnx != out {
                    bail!(
                        "a ceil-mode {kernel}×{kernel}/{stride} max-pool with padding {pad} on a \
                         {h}×{w} map: its last window would start in the padding, which PyTorch \
                         drops ({out}) and ONNX keeps ({onnx}); export at another image size"
                    );
                }
            }
        }
        let name = self.node(
            "MaxPool",
            &[&x.name],
            vec![
                attr_ints("kernel_shape", &[kernel, kernel]),
                attr_ints("strides", &[stride, stride]),
                attr_ints("pads", &[pad, pad, pad, pad]),
                attr_int("ceil_mode", ceil as i64),
            ],
            "maxpool",
        );
        Ok(Value {
            name,
            shape: [c, oh, ow],
        })
    }

    /// Concatenation along the channels.
    pub fn concat(&mut self, xs: &[Value]) -> Result<Value> {
        let first = xs.first().context("a concatenation of nothing")?;
        let (h, w) = (first.shape[1], first.shape[2]);
        if xs.iter().any(|x| x.shape[1] != h || x.shape[2] != w) {
            bail!("concatenating maps of different sizes");
        }
        let names: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        let name = self.node("Concat", &names, vec![attr_int("axis", 1)], "concat");
        Ok(Value {
            name,
            shape: [xs.iter().map(|x| x.shape[0]).sum(), h, w],
        })
    }

    /// Global average pooling then flattening: `[N, C, H, W]` → `[N, C]`.
    pub fn pool_flatten(&mut self, x: &Value) -> Value {
        let pooled = self.node("GlobalAveragePool", &[&x.name], vec![], "gap");
        let name = self.node("Flatten", &[&pooled], vec![attr_int("axis", 1)], "flatten");
        Value {
            name,
            shape: [x.shape[0], 1, 1],
        }
    }

    /// `x · wᵀ + b` for `x` `[N, in]` and the initialisers `w` `[out, in]`, `b` `[out]`.
    pub fn linear(&mut self, x: &Value, w: &str, b: &str, out: i64) -> Value {
        let name = self.node(
            "Gemm",
            &[&x.name, w, b],
            vec![attr_int("transB", 1)],
            "gemm",
        );
        Value {
            name,
            shape: [out, 1, 1],
        }
    }

    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        let name = self.node("Add", &[&a.name, &b.name], vec![], "add");
        Value {
            name,
            shape: a.shape,
        }
    }

    /// `x · scale + shift` per channel (initialisers of shape `[1, C, 1, 1]`).
    pub fn affine(&mut self, x: &Value, scale: &str, shift: &str) -> Value {
        let m = self.node("Mul", &[&x.name, scale], vec![], "mul");
        let name = self.node("Add", &[&m, shift], vec![], "add");
        Value {
            name,
            shape: x.shape,
        }
    }

    /// `x` reversed along `axes` (2: height, 3: width): a flip.
    pub fn flip(&mut self, x: &Value, axes: &[i64]) -> Value {
        let starts = self.init_i64("flip_starts", &vec![-1; axes.len()]);
        let ends = self.init_i64("flip_ends", &vec![i64::MIN; axes.len()]);
        let ax = self.init_i64("flip_axes", axes);
        let steps = self.init_i64("flip_steps", &vec![-1; axes.len()]);
        let name = self.node(
            "Slice",
            &[&x.name, &starts, &ends, &ax, &steps],
            vec![],
            "flip",
        );
        Value {
            name,
            shape: x.shape,
        }
    }

    /// The mean of equal-shaped values.
    pub fn mean(&mut self, xs: &[Value]) -> Result<Value> {
        let first = xs.first().context("a mean of nothing")?.clone();
        if xs.len() == 1 {
            return Ok(first);
        }
        let names: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        let name = self.node("Mean", &names, vec![], "mean");
        Ok(Value {
            name,
            shape: first.shape,
        })
    }

    pub fn softmax(&mut self, x: &Value, out: &str) {
        self.node_named("Softmax", &[&x.name], vec![attr_int("axis", 1)], out);
    }

    pub fn identity(&mut self, x: &Value, out: &str) {
        self.node_named("Identity", &[&x.name], vec![], out);
    }

    /// A SAME-padded convolution's pads for a map of `h`×`w` ([top, left, bottom, right]):
    /// TensorFlow's rule, the extra pixel right and bottom.
    pub fn same_pads(h: i64, w: i64, kernel: i64, stride: i64) -> [i64; 4] {
        let one = |input: i64| {
            let out = (input + stride - 1) / stride;
            let total = ((out - 1) * stride + kernel - input).max(0);
            (total / 2, total - total / 2)
        };
        let ((t, b), (l, r)) = (one(h), one(w));
        [t, l, b, r]
    }

    /// An attribute of a string (for metadata-bearing nodes).
    pub fn string_attribute(name: &str, v: &str) -> AttributeProto {
        attr_string(name, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ceil_mode_pool_whose_last_window_starts_in_the_padding_is_refused() {
        let mut g = Graph::new(DEFAULT_OPSET).unwrap();
        let x = Value {
            name: "x".into(),
            shape: [8, 5, 5],
        };
        // 5 px, 2×2/2, padding 1: PyTorch's ceil mode drops the window that would start at 6
        // (in the padding) and gives 3; ONNX's rule gives 4.
        let err = g.max_pool(&x, 2, 2, 1, true).unwrap_err().to_string();
        assert!(
            err.contains("PyTorch drops (3) and ONNX keeps (4)"),
            "{err}"
        );
        // Without padding, or one pixel more, both agree.
        assert_eq!(g.max_pool(&x, 3, 2, 0, true).unwrap().shape, [8, 2, 2]);
        let y = Value {
            name: "y".into(),
            shape: [8, 6, 6],
        };
        assert_eq!(g.max_pool(&y, 2, 2, 1, true).unwrap().shape, [8, 4, 4]);
    }

    #[test]
    fn opsets_outside_what_is_written_are_refused() {
        assert!(Graph::new(12).is_err() && Graph::new(22).is_err());
        assert!(Graph::new(13).is_ok() && Graph::new(21).is_ok());
    }
}
