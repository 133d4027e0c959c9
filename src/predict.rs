//! One image's prediction as the tool reports it (predict's lines, JSON and CSV, and serve's
//! answers): the most probable classes, the decision at the checkpoint's threshold and the
//! conformal set, from an ensemble's [`Answer`].

use serde::Serialize;

use crate::ensemble::Answer;

/// One class and its probability.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub class: String,
    pub probability: f64,
}

/// The prediction for one image.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: String,
    /// The most probable class and its probability.
    pub class: String,
    pub probability: f64,
    pub top_k: Vec<Scored>,
    /// Whether the probabilities are calibrated (a temperature fitted on a cv's out-of-fold
    /// predictions applied).
    pub calibrated: bool,
    /// The class decided: two classes, the first when its probability is ≥ `threshold`;
    /// else the most probable.
    pub decision: String,
    pub threshold: Option<f64>,
    /// The conformal prediction set (`None`: the checkpoint carries no conformal thresholds):
    /// one class, both ("cannot tell: refer"), or none.
    pub set: Option<Vec<String>>,
}

impl Prediction {
    /// The prediction for `path` from its answer: the `k` most probable classes, most
    /// probable first (ties: the class listed first).
    pub fn from_answer(
        path: String,
        answer: &Answer,
        classes: &[String],
        k: usize,
        calibrated: bool,
        threshold: Option<f64>,
    ) -> Self {
        let probs = &answer.probs;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top_k: Vec<Scored> = order
            .iter()
            .take(k.max(1))
            .map(|&c| Scored {
                class: classes[c].clone(),
                probability: probs[c],
            })
            .collect();
        Prediction {
            path,
            class: top_k[0].class.clone(),
            probability: top_k[0].probability,
            top_k,
            calibrated,
            decision: classes[answer.decision].clone(),
            threshold,
            set: answer
                .set
                .as_ref()
                .map(|s| s.iter().map(|&c| classes[c].clone()).collect()),
        }
    }

    /// The decision and set as text: "decision Monkey Pox (P ≥ 0.310); set {Monkey Pox}".
    pub fn verdict(&self, classes: &[String]) -> String {
        let mut out = match self.threshold {
            Some(t) => format!(
                "decision {} (P({}) {} {t:.3})",
                self.decision,
                classes[0],
                if self.decision == classes[0] {
                    "≥"
                } else {
                    "<"
                }
            ),
            None => format!("decision {}", self.decision),
        };
        if let Some(set) = &self.set {
            out += &match set.len() {
                0 => "; set {} (unlike the images calibrated on: refer)".to_string(),
                1 => format!("; set {{{}}}", set[0]),
                _ => format!("; set {{{}}} (cannot tell: refer)", set.join(", ")),
            };
        }
        out
    }
}
