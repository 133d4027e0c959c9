//! `inception summary`: the layer table of a network, and what its 1×1 reductions save.

use anyhow::Result;
use tch::Device;

use crate::cli::SummaryArgs;
use crate::model::summary::Summary;
use crate::model::{Model, NetConfig};

pub fn run(args: &SummaryArgs) -> Result<()> {
    let config = NetConfig {
        aux_logits: args.aux_logits,
        ..NetConfig::new(args.arch, args.num_classes)
    };
    let summary = Model::new(config, Device::Cpu)?.summary(args.image_size)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    Ok(())
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn shape(s: &[i64]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// The table as printed.
pub fn render(s: &Summary) -> String {
    let mut out = format!(
        "{} — {} classes, input 3×{}×{}{}\n\n",
        s.arch,
        s.num_classes,
        s.image_size,
        s.image_size,
        if s.aux_logits {
            ", with auxiliary heads"
        } else {
            ""
        }
    );
    out += &format!(
        "{:<34} {:<32} {:>12} {:>12} {:>15}\n",
        "layer", "kind", "output", "params", "MACs"
    );
    let mut group = "";
    let mut branch: Option<&str> = None;
    for r in &s.layers {
        if r.group != group {
            group = &r.group;
            branch = None;
            out += &format!("{group}\n");
        }
        if r.branch.as_deref() != branch {
            branch = r.branch.as_deref();
            if let Some(b) = branch {
                out += &format!("  {b}\n");
            }
        }
        let indent = if r.branch.is_some() { "    " } else { "  " };
        out += &format!(
            "{:<34} {:<32} {:>12} {:>12} {:>15}\n",
            format!("{indent}{}", r.name),
            r.layer,
            shape(&r.output),
            thousands(r.params),
            thousands(r.macs)
        );
    }
    out += &format!(
        "\ntotal: {} parameters, {} MACs per image ({:.3} G)\n",
        thousands(s.total_params),
        thousands(s.total_macs),
        s.total_macs as f64 / 1e9
    );
    if s.aux_logits {
        out += &format!(
            "  of which auxiliary heads (training only): {} parameters, {} MACs not in the total\n",
            thousands(s.aux_params),
            thousands(s.aux_macs)
        );
    }
    if s.blocks.is_empty() {
        return out;
    }
    out +=
        "\nWhat the 1×1 reductions save: each block as built, and the same block with branches 2 \
            and 3\nconvolving the block's input directly (no 1×1 reduction first).\n";
    out += &format!(
        "{:<6} {:>12} {:>11} {:>11} {:>7} {:>14} {:>14} {:>7}\n",
        "block", "input", "params", "without", "saved", "MACs", "without", "saved"
    );
    let pct = |with: i64, without: i64| 100.0 * (without - with) as f64 / without as f64;
    for b in &s.blocks {
        out += &format!(
            "{:<6} {:>12} {:>11} {:>11} {:>6.1}% {:>14} {:>14} {:>6.1}%\n",
            b.block.trim_start_matches("inception"),
            shape(&b.input),
            thousands(b.params),
            thousands(b.params_without_reductions),
            pct(b.params, b.params_without_reductions),
            thousands(b.macs),
            thousands(b.macs_without_reductions),
            pct(b.macs, b.macs_without_reductions)
        );
    }
    let sum =
        |f: fn(&crate::model::summary::BlockSaving) -> i64| s.blocks.iter().map(f).sum::<i64>();
    let (p, pw) = (sum(|b| b.params), sum(|b| b.params_without_reductions));
    let (m, mw) = (sum(|b| b.macs), sum(|b| b.macs_without_reductions));
    out += &format!(
        "{:<6} {:>12} {:>11} {:>11} {:>6.1}% {:>14} {:>14} {:>6.1}%\n",
        "all",
        "",
        thousands(p),
        thousands(pw),
        pct(p, pw),
        thousands(m),
        thousands(mw),
        pct(m, mw)
    );
    out
}
