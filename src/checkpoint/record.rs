//! What a training run records: one row of metrics per epoch (`metrics.csv`), and in each
//! checkpoint how it was made and what resuming needs.

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::dataset::SplitFiles;

/// One epoch's measurements; also the columns of `metrics.csv`, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: u64,
    /// Mean training loss as optimised (class weights, label smoothing, auxiliary heads).
    pub train_loss: f64,
    pub train_acc: f64,
    /// Mean cross-entropy on the validation images (no weights, no smoothing); the
    /// validation columns are empty (`None`) in a run without validation images.
    #[serde(default)]
    pub val_loss: Option<f64>,
    #[serde(default)]
    pub val_acc: Option<f64>,
    #[serde(default)]
    pub val_macro_f1: Option<f64>,
    /// Learning rate of the epoch's last step (the schedule moves every step).
    pub lr: f64,
    /// Training images per second (data loading included).
    pub images_per_s: f64,
    /// Seconds the whole epoch took, validation included.
    pub seconds: f64,
}

impl EpochRecord {
    /// The `metrics.csv` header.
    pub const CSV_HEADER: &'static str =
        "epoch,train_loss,train_acc,val_loss,val_acc,val_macro_f1,lr,images_per_s,seconds";

    pub fn csv_row(&self) -> String {
        let val = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
        format!(
            "{},{:.6},{:.6},{},{},{},{:.8},{:.2},{:.2}",
            self.epoch,
            self.train_loss,
            self.train_acc,
            val(self.val_loss),
            val(self.val_acc),
            val(self.val_macro_f1),
            self.lr,
            self.images_per_s,
            self.seconds
        )
    }

    /// Parses a row written by [`Self::csv_row`].
    pub fn from_csv_row(row: &str) -> anyhow::Result<EpochRecord> {
        let f: Vec<&str> = row.split(',').collect();
        if f.len() != 9 {
            anyhow::bail!(
                "metrics.csv row {row:?}: expected 9 fields, got {}",
                f.len()
            );
        }
        let num = |i: usize| -> anyhow::Result<f64> {
            f[i].parse::<f64>()
                .map_err(|_| anyhow::anyhow!("metrics.csv row {row:?}: field {i} is not a number"))
        };
        let opt = |i: usize| -> anyhow::Result<Option<f64>> {
            if f[i].is_empty() {
                Ok(None)
            } else {
                num(i).map(Some)
            }
        };
        Ok(EpochRecord {
            epoch: num(0)? as u64,
            train_loss: num(1)?,
            train_acc: num(2)?,
            val_loss: opt(3)?,
            val_acc: opt(4)?,
            val_macro_f1: opt(5)?,
            lr: num(6)?,
            images_per_s: num(7)?,
            seconds: num(8)?,
        })
    }

    /// The line printed after the epoch.
    pub fn line(&self, epochs: u64) -> String {
        let val = match (self.val_loss, self.val_acc, self.val_macro_f1) {
            (Some(l), Some(a), Some(f)) => format!("val loss {l:.4} acc {a:.3} macro-F1 {f:.3}"),
            _ => "no validation".into(),
        };
        format!(
            "epoch {:>3}/{epochs}  train loss {:.4} acc {:.3}  {val}  lr {:.2e}  {:.1} img/s  \
             {:.1}s",
            self.epoch, self.train_loss, self.train_acc, self.lr, self.images_per_s, self.seconds
        )
    }
}

/// The best epoch so far: highest validation macro-F1, ties to the lower validation loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Best {
    pub epoch: u64,
    pub val_macro_f1: f64,
    pub val_loss: f64,
}

impl Best {
    /// The epoch's validation result; `None` without validation.
    pub fn of(r: &EpochRecord) -> Option<Best> {
        Some(Best {
            epoch: r.epoch,
            val_macro_f1: r.val_macro_f1?,
            val_loss: r.val_loss?,
        })
    }

    /// Whether `other` beats `self`.
    pub fn beaten_by(&self, other: &Best) -> bool {
        other.val_macro_f1 > self.val_macro_f1
            || (other.val_macro_f1 == self.val_macro_f1 && other.val_loss < self.val_loss)
    }
}

/// What `--resume` needs beyond the weights and the optimiser's buffers. The random state is
/// derived from the seed and the epoch (shuffling, augmentation, dropout), so the next epoch
/// number restores it. The default is a run's start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeState {
    /// Optimiser updates made so far.
    pub optimizer_step: u64,
    pub best: Option<Best>,
    /// Epochs since the best one (for `patience`).
    pub epochs_since_best: u64,
    /// The fp16 loss scaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaler: Option<ScalerState>,
}

/// How a checkpoint was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    pub config: TrainConfig,
    /// The dataset folder (absolute).
    pub dataset: String,
    pub split: SplitFiles,
    /// Epochs completed when this checkpoint was written.
    pub epoch: u64,
    pub metrics: EpochRecord,
    /// `last.pt` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeState>,
}

/// What `last.pt` keeps of the scaler, so that a resumed run scales as an uninterrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalerState {
    /// The current loss scale.
    pub scale: f64,
    /// Clean steps since the scale last changed.
    pub growth_tracker: u64,
}
