//! `reliability.png`: the reliability diagram (DeGroot & Fienberg 1983; Guo et al. 2017) —
//! per equal-width bin of the probability the calibration measures look at
//! ([`crate::trust::calibration`]), the observed frequency against the mean probability, with
//! the number of images in each bin written on it and the diagonal a calibrated model would
//! follow; one series per set of probabilities (raw and calibrated).

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;

use super::{draw, err, FAMILY, SERIES};
use crate::trust::calibration::Bin;

/// One set of bins with its legend and ECE.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub bins: Vec<Bin>,
    pub ece: f64,
}

/// The diagram, 700×720: `what` names the probability (e.g. "P(Monkey Pox)").
pub fn render(series: &[Series], what: &str, images: usize) -> Result<RgbImage> {
    draw(700, 720, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("reliability, {what}, {images} images"),
                (FAMILY, 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(format!("mean predicted {what} in the bin"))
            .y_desc("observed frequency in the bin")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.4).stroke_width(1),
            ))
            .map_err(err)?
            .label("calibrated (diagonal)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        for (i, s) in series.iter().enumerate() {
            let color = SERIES[i % SERIES.len()];
            let points: Vec<(f64, f64)> = s
                .bins
                .iter()
                .filter(|b| b.count > 0)
                .map(|b| (b.confidence, b.frequency))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(format!("{} (ECE {:.3})", s.name, s.ece))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 4, color.filled())),
                )
                .map_err(err)?;
            // The count of each bin beside its point, offset per series so they do not overlap.
            let dy = if i % 2 == 0 { -18 } else { 6 };
            chart
                .draw_series(s.bins.iter().filter(|b| b.count > 0).map(|b| {
                    EmptyElement::at((b.confidence, b.frequency))
                        + Text::new(
                            format!("{}", b.count),
                            (6, dy),
                            (FAMILY, 13).into_font().color(&color),
                        )
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Draws `file`: raw probabilities and, when a temperature was fitted, those at it.
pub fn save(
    file: &std::path::Path,
    classes: &[String],
    raw: &[Vec<f64>],
    probs: &[Vec<f64>],
    labels: &[usize],
    calibrated: bool,
) -> Result<()> {
    use crate::trust::calibration::{ece, reliability, scored};
    let mut series = vec![];
    let mut add = |name: &str, p: &[Vec<f64>]| {
        let (p, hit) = scored(p, labels);
        series.push(Series {
            name: name.into(),
            bins: reliability(&p, &hit),
            ece: ece(&p, &hit),
        });
    };
    add("raw", raw);
    if calibrated {
        add("at the fitted temperature", probs);
    }
    let what = if classes.len() == 2 {
        format!("P({})", classes[0])
    } else {
        "top-label confidence".to_string()
    };
    let img = render(&series, &what, labels.len())?;
    crate::plot::save(&img, file)
}
