//! `results.png`: a run's curves per epoch, drawn from its `metrics.csv` rows — loss and
//! accuracy (training and validation), validation macro-F1, and the learning rate.

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;

use super::{draw, err, FAMILY, SERIES};
use crate::checkpoint::record::EpochRecord;

/// One curve: its name and its (epoch, value) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One panel: its title and its curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: &'static str,
    pub series: Vec<Series>,
}

/// What `results.png` shows, taken from the records: the values each panel draws.
pub fn panels(rows: &[EpochRecord]) -> Vec<Panel> {
    let of = |name, f: &dyn Fn(&EpochRecord) -> Option<f64>| Series {
        name,
        points: rows
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect(),
    };
    let keep = |series: Vec<Series>| {
        series
            .into_iter()
            .filter(|s| !s.points.is_empty())
            .collect()
    };
    vec![
        Panel {
            title: "loss",
            series: keep(vec![
                of("train", &|r| Some(r.train_loss)),
                of("val", &|r| r.val_loss),
            ]),
        },
        Panel {
            title: "accuracy",
            series: keep(vec![
                of("train", &|r| Some(r.train_acc)),
                of("val", &|r| r.val_acc),
            ]),
        },
        Panel {
            title: "validation macro-F1",
            series: keep(vec![of("val", &|r| r.val_macro_f1)]),
        },
        Panel {
            title: "learning rate",
            series: keep(vec![of("lr", &|r| Some(r.lr))]),
        },
    ]
}

/// The picture: the four panels in a 2×2 grid, 1200×800.
pub fn render(rows: &[EpochRecord]) -> Result<RgbImage> {
    let panels = panels(rows);
    draw(1200, 800, |root| {
        let areas = root.split_evenly((2, 2));
        for (area, panel) in areas.iter().zip(&panels) {
            line_chart(area, panel)?;
        }
        Ok(())
    })
}

fn line_chart(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<()> {
    let all: Vec<(f64, f64)> = panel.series.iter().flat_map(|s| s.points.clone()).collect();
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    // A flat curve (a constant learning rate) gets a band around its value.
    let pad = ((hi - lo) * 0.08)
        .max(hi.abs().max(lo.abs()) * 0.1)
        .max(1e-12);
    let y = (lo - pad)..(hi + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(panel.title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(1.0..x_max.max(2.0), y)
        .map_err(err)?;
    let sci = panel.title == "learning rate";
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((x_max as usize).clamp(2, 10))
        .x_label_formatter(&|x| {
            if x.fract().abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FAMILY, 14))
        .y_label_formatter(&|v| {
            if sci {
                format!("{v:.1e}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()
        .map_err(err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if s.points.len() == 1 {
            chart
                .draw_series(s.points.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}
