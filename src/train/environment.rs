//! Where and with what a run was made, as `environment.json` in its folder: tool version and
//! git commit, libtorch, device and precision, and the initial weights (from scratch, or which
//! file, with its SHA-256). Read by `inception report` for the model card's details.

use crate::runs::run::ENVIRONMENT_JSON;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::TrainJob;
use crate::weights;

/// The weights a run started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitialWeights {
    /// `scratch` (seeded random), `pretrained` (`--pretrained`) or `init` (`--init`).
    pub from: String,
    /// What the weights are (the published weights' description), when known.
    pub what: Option<String>,
    pub file: Option<String>,
    pub sha256: Option<String>,
}

/// A run's environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEnvironment {
    pub tool_version: String,
    /// The commit the tool was built from (`None` outside a git checkout).
    pub git_commit: Option<String>,
    pub libtorch: String,
    /// `cpu`, `cuda:0`…
    pub device: String,
    /// `fp32`, `bf16` or `fp16`, with the memory layout.
    pub precision: String,
    /// Processes of a data-parallel run (1 alone).
    pub processes: usize,
    pub initial_weights: InitialWeights,
}

impl RunEnvironment {
    /// The environment of `job` in this process.
    pub fn of(job: &TrainJob) -> Result<RunEnvironment> {
        let cfg = &job.config;
        let (from, what, file) = match (&cfg.init, cfg.pretrained) {
            (Some(spec), _) => ("init", None, Some(weights::resolve(spec)?)),
            (None, true) => (
                "pretrained",
                crate::model::published(cfg.arch).map(|p| p.what.to_string()),
                Some(weights::pretrained_path(cfg.arch)?),
            ),
            (None, false) => ("scratch", None, None),
        };
        let sha256 = match &file {
            Some(f) => Some(weights::hub::sha256_file(f)?),
            None => None,
        };
        Ok(RunEnvironment {
            tool_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: crate::system::git_commit().map(str::to_string),
            libtorch: crate::system::libtorch_version(),
            device: crate::device::describe(job.compute.device),
            precision: job.compute.to_string(),
            processes: job.world.as_ref().map_or(1, |w| w.size),
            initial_weights: InitialWeights {
                from: from.into(),
                what,
                file: file.map(|f| f.display().to_string()),
                sha256,
            },
        })
    }

    /// Reads `environment.json` of the run folder `dir`; `None` for runs from before it.
    pub fn read(dir: &Path) -> Result<Option<RunEnvironment>> {
        let path = dir.join(ENVIRONMENT_JSON);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a run's environment record", path.display()))
    }
}
