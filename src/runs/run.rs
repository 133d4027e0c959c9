//! A training run's folder: `config.json` (the resolved config), `split.json`, `data.json`
//! (the data card) and `environment.json` at the start, a `metrics.csv` row after every
//! epoch, and the checkpoints — `last.pt` (everything resuming needs, every epoch), `best.pt`
//! (the best validation epoch so far) and, when the run ends, `model.pt` (the weights the run
//! ships). Every name here; `crate::train::run_files` writes them.

/// The checkpoint to use: the weights a finished run ships.
pub const MODEL: &str = "model.pt";
/// The checkpoint of the best validation epoch.
pub const BEST: &str = "best.pt";
/// The checkpoint of the latest epoch, with what resuming needs.
pub const LAST: &str = "last.pt";
/// The resolved training config.
pub const CONFIG_JSON: &str = "config.json";
/// The files trained on and validated on.
pub const SPLIT_JSON: &str = "split.json";
/// The data card ([`crate::data::card`]).
pub const DATA_JSON: &str = crate::data::card::FILE;
/// Where and how the run computed ([`crate::train::environment`]).
pub const ENVIRONMENT_JSON: &str = "environment.json";
/// One row per epoch ([`crate::checkpoint::record::EpochRecord`]).
pub const METRICS_CSV: &str = "metrics.csv";
/// The training curves, redrawn after every epoch.
pub const RESULTS_PNG: &str = "results.png";
/// The first augmented training batch.
pub const BATCH_JPG: &str = "train_batch0.jpg";
