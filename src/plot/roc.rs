//! `roc.png` (two classes): the ROC curve of the positive class with its AUC; for
//! cross-validation one curve per fold and the pooled out-of-fold one.

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;

use super::{draw, err, FAMILY, SERIES};

/// One curve: its legend, its (false-positive rate, true-positive rate) points, its AUC.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub auc: f64,
    /// Drawn thick and black (the pooled curve of cv).
    pub bold: bool,
}

/// The curves on one chart, 700×700, titled with the positive class.
pub fn render(curves: &[Curve], positive: &str) -> Result<RgbImage> {
    draw(700, 700, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("ROC, positive class {positive}"), (FAMILY, 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate (1 − specificity)")
            .y_desc("true-positive rate (sensitivity)")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3),
            ))
            .map_err(err)?;
        for (i, c) in curves.iter().enumerate() {
            let style = if c.bold {
                BLACK.stroke_width(3)
            } else {
                SERIES[i % SERIES.len()].stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(c.points.clone(), style))
                .map_err(err)?
                .label(format!("{} (AUC {:.3})", c.name, c.auc))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}
