//! Post-training static int8 quantisation of an exported graph, written as QDQ (ONNX Runtime's
//! "quantize-dequantize" format, which it fuses into its int8 kernels): every activation a
//! convolution, pool, concatenation, addition or the class layer reads goes through
//! QuantizeLinear → DequantizeLinear as uint8 with the range calibration saw (asymmetric);
//! weights are int8 per output channel (symmetric, scale max|w|/127, or larger where two
//! neighbouring weights could saturate a VNNI-less x86 kernel: [`WEIGHT_PAIR_MAX`]), biases int32 at
//! scale(input)·scale(weight). A ReLU or ReLU6 right after a convolution is folded into the
//! following quantisation (its range starts at 0), as ONNX Runtime's own quantiser does.
//! Ranges are the minimum and maximum of each value over the calibration images, run through
//! the float graph by [`super::eval`].

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::proto::{tensor_proto::DataType, GraphProto, NodeProto, TensorProto};
use super::{attr_int, eval};

/// The largest quantised weight's magnitude (symmetric int8).
pub const WEIGHT_QMAX: f64 = 127.0;

/// The most two quantised weights of one output channel may add up to in magnitude. An x86 CPU
/// without VNNI runs ONNX Runtime's uint8 × int8 kernels with VPMADDUBSW, which adds two
/// products into 16 bits and saturates: 255 · (|q₁| + |q₂|) must stay within 32767, so at most
/// 128. A channel one of whose pairs (neighbours along the reduction: [`pair_sums`]) would pass
/// 127 at scale max|w|/127 takes the scale (pair sum)/127 instead (one short of 128 for
/// rounding). On MSLD saturation had turned 98 % top-1 agreement with fp32 into 84 %; 7-bit
/// weights everywhere (ONNX Runtime's `reduce_range`) into 94 %.
pub const WEIGHT_PAIR_MAX: f64 = 127.0;

/// How weights are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    /// max|w|/127, or coarser where neighbouring weights could saturate ([`WEIGHT_PAIR_MAX`]):
    /// right on every CPU.
    NoSaturation,
    /// max|w|/127 everywhere: for CPUs whose int8 kernels cannot saturate (VNNI, ARM).
    FullRange,
}

impl Weights {
    /// What the model's metadata says of its weights.
    pub fn describe(self) -> &'static str {
        match self {
            Weights::NoSaturation => {
                "no pair of neighbouring weights can saturate a uint8 x int8 kernel"
            }
            Weights::FullRange => "full range: saturates on x86 CPUs without VNNI",
        }
    }
}

/// The largest |w₂ⱼ| + |w₂ⱼ₊₁| of each output channel of a weight `[C, …]`: the pairs of
/// neighbours along the reduction, in both orders ONNX Runtime may lay a convolution's reduction
/// out in (input channel outermost, as ONNX stores it, or innermost, as its NHWC kernels do).
fn pair_sums(w: &Tensor) -> Result<Tensor> {
    let c = w.size()[0];
    let a = w.f_abs()?;
    let mut orders = vec![a.f_reshape([c, -1])?];
    if a.dim() == 4 {
        orders.push(
            a.f_permute([0, 2, 3, 1])?
                .f_contiguous()?
                .f_reshape([c, -1])?,
        );
    }
    let mut most: Option<Tensor> = None;
    for flat in orders {
        let k = flat.size()[1];
        let flat = match k % 2 {
            0 => flat,
            _ => Tensor::f_cat(
                &[
                    flat.shallow_clone(),
                    flat.f_zeros_like()?.f_narrow(1, 0, 1)?,
                ],
                1,
            )?,
        };
        let sums =
            flat.f_reshape([c, -1, 2])?
                .f_sum_dim_intlist(&[2i64][..], false, Kind::Float)?;
        let m = sums.f_amax(&[1i64][..], false)?; // [C]
        most = Some(match most {
            Some(prev) => prev.f_maximum(&m)?,
            None => m,
        });
    }
    most.context("a weight without elements")
}

/// Minimum and maximum of every float value of the graph (activations) over some inputs.
#[derive(Debug, Default)]
pub struct Ranges(pub HashMap<String, (f64, f64)>);

impl Ranges {
    /// Adds the values of one batch.
    pub fn observe(&mut self, graph: &GraphProto, batch: &Tensor) -> Result<()> {
        let weights: HashSet<&str> = graph
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        for (name, t) in eval::run(graph, batch)? {
            if weights.contains(name.as_str()) || t.kind() != Kind::Float {
                continue;
            }
            let lo = t.f_min()?.double_value(&[]);
            let hi = t.f_max()?.double_value(&[]);
            let e = self.0.entry(name).or_insert((lo, hi));
            e.0 = e.0.min(lo);
            e.1 = e.1.max(hi);
        }
        Ok(())
    }
}

fn raw_tensor(name: &str, dims: Vec<i64>, data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims,
        data_type: Some(data_type as i32),
        raw_data: Some(raw),
        ..Default::default()
    }
}

/// uint8 scale and zero point of a range (0 always inside, as ONNX Runtime does).
fn activation_params(lo: f64, hi: f64) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = ((hi - lo) / 255.0).max(1e-8);
    let zp = (-lo / scale).round().clamp(0.0, 255.0);
    (scale as f32, zp as u8)
}

fn node(op: &str, inputs: &[&str], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op}_{output}")),
        attribute: axis.map(|a| vec![attr_int("axis", a)]).unwrap_or_default(),
        ..Default::default()
    }
}

/// Operators whose float inputs are quantised.
const QUANTISED: [&str; 6] = [
    "Conv",
    "Gemm",
    "MaxPool",
    "Concat",
    "GlobalAveragePool",
    "Add",
];

/// The QDQ graph of `graph` with activation ranges `ranges`, weights scaled as `scheme` says.
pub fn qdq(graph: &GraphProto, ranges: &Ranges, scheme: Weights) -> Result<GraphProto> {
    let mut g = graph.clone();
    let weights: HashMap<String, TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone().unwrap_or_default(), t.clone()))
        .collect();
    let outputs: HashSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();

    // A ReLU or ReLU6 that is a convolution's only consumer goes: the convolution writes the
    // activation's output, whose range (from 0) the quantisation after it then clamps to.
    let consumers = |nodes: &[NodeProto], v: &str| -> usize {
        nodes
            .iter()
            .filter(|n| n.input.iter().any(|i| i == v))
            .count()
    };
    let mut i = 0;
    while i < g.node.len() {
        let n = &g.node[i];
        let is_act = matches!(n.op_type.as_deref(), Some("Relu") | Some("Clip"));
        let input = n.input.first().cloned().unwrap_or_default();
        let producer = g.node.iter().position(|p| p.output.first() == Some(&input));
        let from_conv = producer.is_some_and(|p| g.node[p].op_type.as_deref() == Some("Conv"));
        if is_act && from_conv && consumers(&g.node, &input) == 1 && !outputs.contains(&input) {
            let out = n.output[0].clone();
            if let Some(p) = producer {
                g.node[p].output[0] = out;
            }
            g.node.remove(i);
            continue;
        }
        i += 1;
    }

    let mut out_nodes = vec![];
    let mut new_inits: Vec<TensorProto> = vec![];
    let mut quantised: HashMap<String, (String, f32)> = HashMap::new();
    let mut dequant_weights: HashSet<String> = HashSet::new();
    for n in &g.node {
        let op = n.op_type.clone().unwrap_or_default();
        let mut n = n.clone();
        if QUANTISED.contains(&op.as_str()) {
            // Activations: Q → DQ once per value, shared by its consumers.
            let acts: Vec<usize> = (0..n.input.len())
                .filter(|&k| !weights.contains_key(&n.input[k]))
                .collect();
            if op == "Add" && acts.len() < 2 {
                out_nodes.push(n);
                continue;
            }
            let mut input_scale = None;
            for &k in &acts {
                let v = n.input[k].clone();
                if !quantised.contains_key(&v) {
                    let (lo, hi) = *ranges
                        .0
                        .get(&v)
                        .with_context(|| format!("no calibration range for {v}"))?;
                    let (scale, zp) = activation_params(lo, hi);
                    let (s, z) = (format!("{v}.scale"), format!("{v}.zero_point"));
                    new_inits.push(raw_tensor(
                        &s,
                        vec![],
                        DataType::Float,
                        scale.to_le_bytes().to_vec(),
                    ));
                    new_inits.push(raw_tensor(&z, vec![], DataType::Uint8, vec![zp]));
                    let (q, dq) = (format!("{v}.quantized"), format!("{v}.dequantized"));
                    out_nodes.push(node("QuantizeLinear", &[&v, &s, &z], &q, None));
                    out_nodes.push(node("DequantizeLinear", &[&q, &s, &z], &dq, None));
                    quantised.insert(v.clone(), (dq, scale));
                }
                let (dq, scale) = &quantised[&v];
                if k == 0 {
                    input_scale = Some(*scale);
                }
                n.input[k] = dq.clone();
            }
            // Weights and biases of a convolution or the class layer.
            if op == "Conv" || op == "Gemm" {
                let s_x = input_scale.context("a convolution without an activation input")?;
                let w_name = n.input[1].clone();
                let w = eval::tensor_of(&weights[&w_name])?;
                let c = w.size()[0];
                let absmax = w.f_abs()?.f_reshape([c, -1])?.f_amax(&[1i64][..], false)?; // [C]
                let scale_w = absmax.f_div_scalar(WEIGHT_QMAX)?;
                let scale_w = match scheme {
                    Weights::NoSaturation => {
                        scale_w.f_maximum(&pair_sums(&w)?.f_div_scalar(WEIGHT_PAIR_MAX)?)?
                    }
                    Weights::FullRange => scale_w,
                };
                // A channel of zero weights takes scale 1 (as ONNX Runtime's quantiser does), so
                // that its bias keeps a scale it can be written at.
                let scale_w = scale_w.f_where_self(&absmax.f_gt(0.0)?, &absmax.f_ones_like()?)?;
                let shape: Vec<i64> = std::iter::once(c)
                    .chain(std::iter::repeat_n(1, w.dim() - 1))
                    .collect();
                let q = w
                    .f_div(&scale_w.f_reshape(&shape)?)?
                    .f_round()?
                    .f_clamp(-WEIGHT_QMAX, WEIGHT_QMAX)?
                    .f_to_kind(Kind::Int8)?;
                let qv = Vec::<i8>::try_from(q.f_flatten(0, -1)?)?;
                let sv = Vec::<f32>::try_from(&scale_w)?;
                let base = w_name.clone();
                let (wq, ws, wz, wdq) = (
                    format!("{base}.quantized"),
                    format!("{base}.scale"),
                    format!("{base}.zero_point"),
                    format!("{base}.dequantized"),
                );
                if dequant_weights.insert(base.clone()) {
                    new_inits.push(raw_tensor(
                        &wq,
                        w.size(),
                        DataType::Int8,
                        qv.iter().map(|&v| v as u8).collect(),
                    ));
                    new_inits.push(raw_tensor(
                        &ws,
                        vec![c],
                        DataType::Float,
                        sv.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                    new_inits.push(raw_tensor(
                        &wz,
                        vec![c],
                        DataType::Int8,
                        vec![0; c as usize],
                    ));
                    out_nodes.push(node("DequantizeLinear", &[&wq, &ws, &wz], &wdq, Some(0)));
                }
                n.input[1] = wdq;
                if let Some(b_name) = n.input.get(2).cloned() {
                    let b = Vec::<f32>::try_from(&eval::tensor_of(&weights[&b_name])?)?;
                    let scale_b: Vec<f32> = sv.iter().map(|&s| s * s_x).collect();
                    let bq: Vec<i32> = b
                        .iter()
                        .zip(&scale_b)
                        .map(|(&b, &s)| {
                            (b / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32
                        })
                        .collect();
                    // One bias per consumer's input scale: named after the node.
                    let tag = n.name.clone().unwrap_or_default();
                    let (bq_n, bs_n, bz_n, bdq_n) = (
                        format!("{b_name}.{tag}.quantized"),
                        format!("{b_name}.{tag}.scale"),
                        format!("{b_name}.{tag}.zero_point"),
                        format!("{b_name}.{tag}.dequantized"),
                    );
                    new_inits.push(raw_tensor(
                        &bq_n,
                        vec![c],
                        DataType::Int32,
                        bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                    new_inits.push(raw_tensor(
                        &bs_n,
                        vec![c],
                        DataType::Float,
                        scale_b.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    ));
                    new_inits.push(raw_tensor(
                        &bz_n,
                        vec![c],
                        DataType::Int32,
                        vec![0; 4 * c as usize],
                    ));
                    out_nodes.push(node(
                        "DequantizeLinear",
                        &[&bq_n, &bs_n, &bz_n],
                        &bdq_n,
                        Some(0),
                    ));
                    n.input[2] = bdq_n;
                }
            }
        }
        out_nodes.push(n);
    }
    // The float weights the quantised ones replace are no longer read.
    let read: HashSet<String> = out_nodes.iter().flat_map(|n| n.input.clone()).collect();
    g.initializer
        .retain(|t| t.name.as_ref().is_some_and(|n| read.contains(n)));
    g.initializer.extend(new_inits);
    g.node = out_nodes;
    if g.node.is_empty() {
        bail!("an empty graph");
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_sums_take_the_worst_neighbours_in_either_layout_of_the_reduction() {
        // [C=1, Cin=2, 2, 1]: ONNX order a b c d pairs (a, b), (c, d); NHWC order a c b d pairs
        // (a, c), (b, d).
        let w = Tensor::from_slice(&[100f32, 0., -100., 0.]).reshape([1, 2, 2, 1]);
        assert_eq!(
            Vec::<f32>::try_from(pair_sums(&w).unwrap()).unwrap(),
            [200.0]
        );
        // An odd reduction: the last weight pairs with nothing.
        let w = Tensor::from_slice(&[1f32, 2., 3., -7., 1., 1.]).reshape([2, 3]);
        assert_eq!(
            Vec::<f32>::try_from(pair_sums(&w).unwrap()).unwrap(),
            [3.0, 8.0]
        );
    }
}
