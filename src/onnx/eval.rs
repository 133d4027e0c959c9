//! Runs a graph this exporter wrote with libtorch, operator by operator, with the meaning ONNX
//! gives them as far as the exporter uses them (a Slice is a flip, a MaxPool's pads symmetric):
//! the export checks its graph against the network before writing it, and int8 calibration
//! reads every activation's range from it. Only the operators the exporter writes are known
//! (Conv, Relu, Clip, MaxPool, Concat, GlobalAveragePool, Flatten, Gemm, Add, Mul, Div, Slice,
//! Mean, Softmax, Log, Identity, Cast, and the QuantizeLinear/DequantizeLinear pairs of an int8
//! graph); anything else is an error naming it.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::proto::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .map(|a| a.ints.clone())
}

fn int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
        .and_then(|a| a.i)
}

/// An initialiser as a tch tensor (float32 or int64).
pub fn tensor_of(t: &TensorProto) -> Result<Tensor> {
    let raw = t.raw_data.as_deref().unwrap_or_default();
    let name = t.name.as_deref().unwrap_or("?");
    let dims = t.dims.clone();
    let out = match t.data_type {
        Some(d) if d == DataType::Float as i32 => {
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Tensor::f_from_slice(&v)?
        }
        Some(d) if d == DataType::Int64 as i32 => {
            let v: Vec<i64> = raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            Tensor::f_from_slice(&v)?
        }
        // float16 weights, computed with in float32 (their values exactly).
        Some(d) if d == DataType::Float16 as i32 => {
            let v: Vec<i16> = raw
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            Tensor::f_from_slice(&v)?
                .f_view_dtype(Kind::Half)?
                .f_to_kind(Kind::Float)?
        }
        // Quantised weights, zero points and biases, as float values (what they stand for
        // before their scale).
        Some(d) if d == DataType::Int8 as i32 => {
            let v: Vec<f32> = raw.iter().map(|&b| b as i8 as f32).collect();
            Tensor::f_from_slice(&v)?
        }
        Some(d) if d == DataType::Uint8 as i32 => {
            let v: Vec<f32> = raw.iter().map(|&b| b as f32).collect();
            Tensor::f_from_slice(&v)?
        }
        Some(d) if d == DataType::Int32 as i32 => {
            let v: Vec<f32> = raw
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
                .collect();
            Tensor::f_from_slice(&v)?
        }
        other => bail!("initialiser {name}: data type {other:?} is not read here"),
    };
    Ok(out.f_reshape(&dims)?)
}

/// Every value of `graph` on `input` (`[N, 3, H, W]` float32, CPU), by name.
pub fn run(graph: &GraphProto, input: &Tensor) -> Result<HashMap<String, Tensor>> {
    let _guard = tch::no_grad_guard();
    let mut values: HashMap<String, Tensor> = HashMap::new();
    // Values of float16 type: every operator's output computed from one is rounded to float16,
    // as an fp16 runtime stores it (an overflow past 65504 becomes inf).
    let mut half: std::collections::HashSet<String> = Default::default();
    for t in &graph.initializer {
        let name = t.name.clone().unwrap_or_default();
        if t.data_type == Some(DataType::Float16 as i32) {
            half.insert(name.clone());
        }
        values.insert(name, tensor_of(t)?);
    }
    let input_name = graph
        .input
        .first()
        .and_then(|i| i.name.clone())
        .context("a graph without an input")?;
    values.insert(input_name, input.f_to_kind(Kind::Float)?);
    for node in &graph.node {
        let op = node.op_type.as_deref().unwrap_or("");
        let get = |i: usize| -> Result<&Tensor> {
            let name = node
                .input
                .get(i)
                .with_context(|| format!("{op}: input {i} missing"))?;
            values
                .get(name)
                .with_context(|| format!("{op}: no value {name}"))
        };
        let y = match op {
            "Conv" => {
                let pads = ints(node, "pads").unwrap_or(vec![0; 4]);
                let strides = ints(node, "strides").unwrap_or(vec![1, 1]);
                let group = int(node, "group").unwrap_or(1);
                let x = get(0)?;
                let (t, l, b, r) = (pads[0], pads[1], pads[2], pads[3]);
                let bias = node.input.get(2).map(|_| get(2)).transpose()?;
                if t == b && l == r {
                    x.f_conv2d(get(1)?, bias, strides, [t, l], [1, 1], group)?
                } else {
                    x.f_constant_pad_nd([l, r, t, b])?.f_conv2d(
                        get(1)?,
                        bias,
                        strides,
                        [0, 0],
                        [1, 1],
                        group,
                    )?
                }
            }
            "Relu" => get(0)?.f_relu()?,
            "Clip" => {
                let lo = get(1)?.f_double_value(&[])?;
                let hi = get(2)?.f_double_value(&[])?;
                get(0)?.f_clamp(lo, hi)?
            }
            "MaxPool" => {
                let k = ints(node, "kernel_shape").context("MaxPool without kernel_shape")?;
                let s = ints(node, "strides").unwrap_or(vec![1, 1]);
                let p = ints(node, "pads").unwrap_or(vec![0; 4]);
                let ceil = int(node, "ceil_mode").unwrap_or(0) == 1;
                get(0)?.f_max_pool2d(&k, &s, [p[0], p[1]], [1, 1], ceil)?
            }
            "Concat" => {
                let axis = int(node, "axis").unwrap_or(1);
                let xs: Vec<&Tensor> = (0..node.input.len()).map(get).collect::<Result<_>>()?;
                Tensor::f_cat(&xs, axis)?
            }
            "GlobalAveragePool" => get(0)?.f_adaptive_avg_pool2d([1, 1])?,
            "Flatten" => get(0)?.f_flatten(int(node, "axis").unwrap_or(1), -1)?,
            "Gemm" => {
                let w = get(1)?;
                let w = if int(node, "transB") == Some(1) {
                    w.f_tr()?
                } else {
                    w.shallow_clone()
                };
                get(0)?.f_matmul(&w)?.f_add(get(2)?)?
            }
            "Add" => get(0)?.f_add(get(1)?)?,
            "Mul" => get(0)?.f_mul(get(1)?)?,
            "Div" => get(0)?.f_div(get(1)?)?,
            "Slice" => {
                // The exporter's only Slice: a flip (start −1, step −1) along its axes.
                let axes = Vec::<i64>::try_from(get(3)?)?;
                let steps = Vec::<i64>::try_from(get(4)?)?;
                if steps.iter().any(|&s| s != -1) {
                    bail!("Slice: only flips (step −1) are read here");
                }
                get(0)?.f_flip(&axes)?
            }
            "Mean" => {
                let xs: Vec<Tensor> = (0..node.input.len())
                    .map(|i| get(i).map(|t| t.shallow_clone()))
                    .collect::<Result<_>>()?;
                Tensor::f_stack(&xs, 0)?.f_mean_dim(&[0i64][..], false, Kind::Float)?
            }
            "Softmax" => get(0)?.f_softmax(int(node, "axis").unwrap_or(-1), Kind::Float)?,
            "Log" => get(0)?.f_log()?,
            "Identity" => get(0)?.shallow_clone(),
            // An fp16 graph runs in float32 here, every output rounded to float16 (below).
            "Cast" => match int(node, "to") {
                Some(t) if t == DataType::Float16 as i64 => {
                    get(0)?.f_to_kind(Kind::Half)?.f_to_kind(Kind::Float)?
                }
                _ => get(0)?.f_to_kind(Kind::Float)?,
            },
            "QuantizeLinear" => {
                // uint8 activations: clamp(round(x / s) + zp, 0, 255), kept as float values.
                let (s, zp) = (get(1)?, get(2)?);
                get(0)?
                    .f_div(s)?
                    .f_round()?
                    .f_add(zp)?
                    .f_clamp(0.0, 255.0)?
            }
            "DequantizeLinear" => {
                let (q, s, zp) = (get(0)?, get(1)?, get(2)?);
                let (s, zp) = match (s.dim(), int(node, "axis")) {
                    (1, Some(axis)) => {
                        let mut shape = vec![1; q.dim()];
                        shape[axis as usize] = -1;
                        (s.f_reshape(&shape)?, zp.f_reshape(&shape)?)
                    }
                    _ => (s.shallow_clone(), zp.shallow_clone()),
                };
                q.f_sub(&zp)?.f_mul(&s)?
            }
            other => bail!("operator {other} is not one this exporter writes"),
        };
        let out = node.output.first().context("a node without an output")?;
        let to_half = match op {
            "Cast" => int(node, "to") == Some(DataType::Float16 as i64),
            _ => node.input.iter().any(|i| half.contains(i)),
        };
        let y = match to_half {
            true => {
                half.insert(out.clone());
                y.f_to_kind(Kind::Half)?.f_to_kind(Kind::Float)?
            }
            false => y,
        };
        values.insert(out.clone(), y);
    }
    Ok(values)
}
