//! Cross-validation's pictures: `cv_accuracy.png`, each fold's accuracy as a bar with the mean
//! and ± one standard deviation; `cv_roc.png` (two classes) is [`super::roc`] with one curve per
//! fold and the pooled out-of-fold curve.

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;

use super::{draw, err, FAMILY, SERIES};

/// Bars of `values` (one per fold) with their mean and standard deviation.
pub fn render_accuracy(values: &[f64], mean: f64, std: f64, what: &str) -> Result<RgbImage> {
    let k = values.len();
    draw(800, 500, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{what} per fold: mean {mean:.3} ± {std:.3} (std)"),
                (FAMILY, 20),
            )
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.6..(k as f64 - 0.4), 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(k.max(1))
            .x_label_formatter(&|x| format!("fold {}", x.round() as i64))
            .y_desc(what)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let x = i as f64;
                Rectangle::new([(x - 0.3, 0.0), (x + 0.3, v)], SERIES[0].filled())
            }))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [
                    (-0.6, (mean - std).max(0.0)),
                    (k as f64 - 0.4, (mean + std).min(1.0)),
                ],
                SERIES[1].mix(0.2).filled(),
            )))
            .map_err(err)?
            .label("± 1 std")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], SERIES[1].mix(0.2).filled())
            });
        chart
            .draw_series(LineSeries::new(
                vec![(-0.6, mean), (k as f64 - 0.4, mean)],
                SERIES[1].stroke_width(2),
            ))
            .map_err(err)?
            .label(format!("mean {mean:.3}"))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], SERIES[1].stroke_width(2))
            });
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(format!("{v:.3}"), (i as f64 - 0.12, v + 0.04), (FAMILY, 14))
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}
