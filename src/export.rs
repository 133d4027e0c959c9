//! A checkpoint, or an ensemble of them, as one ONNX model: input `input` float32
//! `[N, 3, S, S]` (N symbolic with `--dynamic-batch`, else 1), outputs `logits` and
//! `probabilities` `[N, classes]`; the preprocessing contract in `metadata_props`, every value
//! JSON. A single checkpoint's `logits` are the network's and its `probabilities`
//! softmax(logits / T) at the temperature it ships (T = 1 uncalibrated): what `inception
//! predict` reports. An ensemble's `probabilities` are the mean of its members' at the
//! ensemble's temperature, and its `logits` their log (whose softmax gives them back).

use anyhow::{Context, Result};
use serde_json::json;

use crate::ensemble::Ensemble;
use crate::onnx::proto::{
    self, tensor_shape_proto::dimension::Value as Dim, tensor_shape_proto::Dimension, type_proto,
    ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use crate::onnx::{Graph, Value};

/// How to write the model.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub opset: i64,
    pub dynamic_batch: bool,
}

/// The IR version a model of `opset` declares (the oldest that has it: what runtimes of that
/// time read).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

fn tensor_type(batch: &Dim, rest: &[i64]) -> TypeProto {
    let mut dims = vec![Dimension {
        value: Some(batch.clone()),
        ..Default::default()
    }];
    dims.extend(rest.iter().map(|&d| Dimension {
        value: Some(Dim::DimValue(d)),
        ..Default::default()
    }));
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(proto::tensor_proto::DataType::Float as i32),
            shape: Some(TensorShapeProto { dim: dims }),
        })),
        ..Default::default()
    }
}

fn value_info(name: &str, t: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(t),
        ..Default::default()
    }
}

/// The model's `metadata_props`: each value JSON (`json.loads` reads it; `names` is also the
/// dict Ultralytics-style readers take).
pub fn metadata(ensemble: &Ensemble, temperature: Option<f64>) -> Vec<(String, String)> {
    let meta = ensemble.meta();
    let s = meta.image_size;
    let resize = crate::data::transform::resize_size(s as u32);
    let names: serde_json::Map<String, serde_json::Value> = meta
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| (i.to_string(), json!(c)))
        .collect();
    let trust = match ensemble.members.len() {
        1 => ensemble.trust.as_ref().map(|t| json!(t)),
        _ => None,
    };
    let n = meta.normalization;
    vec![
        ("classes", json!(meta.classes)),
        ("names", json!(names)),
        ("imgsz", json!([s, s])),
        ("image_size", json!(s)),
        ("resize_shorter_side", json!(resize)),
        ("mean", json!(n.mean)),
        ("std", json!(n.std)),
        (
            "preprocessing",
            json!(format!(
                "RGB; resize the shorter side to {resize} (bilinear, antialiased), centre-crop \
                 {s}x{s}, pixels/255, (x - mean) / std per channel, float32 [N, 3, {s}, {s}]"
            )),
        ),
        ("arch", json!(meta.arch.name())),
        ("members", json!(ensemble.files())),
        ("temperature", json!(temperature)),
        ("trust", json!(trust)),
        ("task", json!("classify")),
        ("tool_version", json!(env!("CARGO_PKG_VERSION"))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The ensemble (or single checkpoint) as an ONNX model.
pub fn model(ensemble: &Ensemble, opts: Options) -> Result<ModelProto> {
    let meta = ensemble.meta();
    let s = meta.image_size;
    let k = meta.classes.len() as i64;
    let mut g = Graph::new(opts.opset)?;
    let input = Value {
        name: "input".into(),
        shape: [3, s, s],
    };
    let temperature = match ensemble.is_calibrated() {
        true => ensemble.fitted_temperature().filter(|&t| t != 1.0),
        false => None,
    };
    let single = ensemble.members.len() == 1;
    let mut probs = vec![];
    let mut first_logits = None;
    for (i, (file, m)) in ensemble.members.iter().enumerate() {
        g.prefix = match single {
            true => String::new(),
            false => format!("member{i}."),
        };
        let z = m
            .model
            .onnx(&mut g, &input)
            .with_context(|| format!("writing {} as ONNX", file.display()))?;
        let scaled = match temperature {
            Some(t) => {
                let t = g.scalar("temperature", t as f32);
                let name = g.node("Div", &[&z.name, &t], vec![], "div");
                Value {
                    name,
                    shape: z.shape,
                }
            }
            None => z.clone(),
        };
        let p = g.node(
            "Softmax",
            &[&scaled.name],
            vec![crate::onnx::attr_int("axis", 1)],
            "softmax",
        );
        probs.push(Value {
            name: p,
            shape: z.shape,
        });
        first_logits.get_or_insert(z);
    }
    g.prefix.clear();
    let z = first_logits.context("an ensemble without members")?;
    if single {
        g.identity(&z, "logits");
        g.node_named("Identity", &[&probs[0].name], vec![], "probabilities");
    } else {
        let mean = g.mean(&probs)?;
        g.node_named("Identity", &[&mean.name], vec![], "probabilities");
        g.node_named("Log", &[&mean.name], vec![], "logits");
    }
    let batch = match opts.dynamic_batch {
        true => Dim::DimParam("batch".into()),
        false => Dim::DimValue(1),
    };
    let graph = proto::GraphProto {
        name: Some(format!("inception_{}", meta.arch.name())),
        node: g.nodes,
        initializer: g.initializers,
        input: vec![value_info("input", tensor_type(&batch, &[3, s, s]))],
        output: vec![
            value_info("logits", tensor_type(&batch, &[k])),
            value_info("probabilities", tensor_type(&batch, &[k])),
        ],
        doc_string: Some(
            "input: float32 [N, 3, S, S] normalised as metadata_props says; logits and \
             probabilities [N, classes]"
                .into(),
        ),
        ..Default::default()
    };
    Ok(ModelProto {
        ir_version: Some(ir_version(opts.opset)),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opts.opset),
        }],
        producer_name: Some("inception".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        model_version: Some(1),
        doc_string: Some(format!(
            "{} written by inception {} from {}",
            meta.arch,
            env!("CARGO_PKG_VERSION"),
            ensemble.files().join(", ")
        )),
        graph: Some(graph),
        metadata_props: metadata(ensemble, temperature)
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: Some(key),
                value: Some(value),
            })
            .collect(),
        ..Default::default()
    })
}
