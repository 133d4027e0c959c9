//! fp16 export: the graph's weights and arithmetic in float16 (half the file, and the speed of
//! fp16 kernels where a runtime has them), its input and outputs kept float32 by a Cast at each
//! end, so that callers feed and read the same tensors as the fp32 model. Weights are rounded
//! to nearest-even by libtorch's conversion.

use std::collections::HashSet;

use anyhow::{Context, Result};
use tch::Kind;

use super::proto::{tensor_proto::DataType, AttributeProto, GraphProto, NodeProto};
use super::{attr_int, eval};

fn cast(input: &str, output: &str, to: DataType) -> NodeProto {
    let attribute: Vec<AttributeProto> = vec![attr_int("to", to as i64)];
    NodeProto {
        op_type: Some("Cast".into()),
        input: vec![input.into()],
        output: vec![output.into()],
        name: Some(format!("Cast_{output}")),
        attribute,
        ..Default::default()
    }
}

/// The float16 graph of `graph` (float32 input and outputs).
pub fn fp16(graph: &GraphProto) -> Result<GraphProto> {
    let mut g = graph.clone();
    for t in &mut g.initializer {
        if t.data_type != Some(DataType::Float as i32) {
            continue;
        }
        let name = t.name.clone().unwrap_or_default();
        let v = eval::tensor_of(t)?
            .f_to_kind(Kind::Half)?
            .f_view_dtype(Kind::Int16)?
            .f_flatten(0, -1)?;
        let bits = Vec::<i16>::try_from(&v).with_context(|| format!("converting {name}"))?;
        t.raw_data = Some(bits.iter().flat_map(|b| b.to_le_bytes()).collect());
        t.data_type = Some(DataType::Float16 as i32);
    }
    let input = g
        .input
        .first()
        .and_then(|i| i.name.clone())
        .context("a graph without an input")?;
    let outputs: HashSet<String> = g.output.iter().filter_map(|o| o.name.clone()).collect();
    let half_input = format!("{input}.fp16");
    for n in &mut g.node {
        for i in &mut n.input {
            if *i == input {
                *i = half_input.clone();
            }
            if outputs.contains(i) {
                *i = format!("{i}.fp16");
            }
        }
        for o in &mut n.output {
            if outputs.contains(o) {
                *o = format!("{o}.fp16");
            }
        }
    }
    g.node
        .insert(0, cast(&input, &half_input, DataType::Float16));
    for o in g.output.iter().filter_map(|o| o.name.clone()) {
        g.node.push(cast(&format!("{o}.fp16"), &o, DataType::Float));
    }
    Ok(g)
}
