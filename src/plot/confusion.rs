//! `confusion_matrix.png`: counts, and each true class's row as shares, side by side.

use anyhow::Result;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{draw, err, FAMILY};

/// Blue of strength `t` in [0, 1] (white to dark blue).
fn blue(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

fn short(name: &str) -> String {
    if name.chars().count() > 14 {
        format!("{}…", name.chars().take(13).collect::<String>())
    } else {
        name.to_string()
    }
}

/// `confusion[truth][prediction]` of `classes`, with a title line (what was measured).
pub fn render(classes: &[String], confusion: &[Vec<usize>], title: &str) -> Result<RgbImage> {
    let k = classes.len();
    let cell = (440 / k.max(1)).clamp(24, 160) as i32;
    let side = cell * k as i32;
    let (left, top) = (130, 90);
    let w = (2 * (left + side) + 60) as u32;
    let h = (top + side + 80) as u32;
    let rows: Vec<f64> = confusion
        .iter()
        .map(|r| r.iter().sum::<usize>() as f64)
        .collect();
    let max = confusion
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    draw(w, h, |root| {
        let centre = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.to_string(),
            (w as i32 / 2, 20),
            (FAMILY, 18).into_font().color(&BLACK).pos(centre),
        ))
        .map_err(err)?;
        for (panel, normalised) in [(0, false), (1, true)] {
            let x0 = 30 + panel * (left + side + 30) + left - 30;
            let heading = if normalised {
                "share of each true class"
            } else {
                "counts"
            };
            root.draw(&Text::new(
                heading,
                (x0 + side / 2, top - 40),
                (FAMILY, 16).into_font().color(&BLACK).pos(centre),
            ))
            .map_err(err)?;
            for (t, row) in confusion.iter().enumerate() {
                for (p, &n) in row.iter().enumerate() {
                    let v = if normalised {
                        if rows[t] > 0.0 {
                            n as f64 / rows[t]
                        } else {
                            0.0
                        }
                    } else {
                        n as f64 / max
                    };
                    let (cx, cy) = (x0 + p as i32 * cell, top + t as i32 * cell);
                    root.draw(&Rectangle::new(
                        [(cx, cy), (cx + cell, cy + cell)],
                        blue(v).filled(),
                    ))
                    .map_err(err)?;
                    root.draw(&Rectangle::new(
                        [(cx, cy), (cx + cell, cy + cell)],
                        BLACK.mix(0.3),
                    ))
                    .map_err(err)?;
                    let text = if normalised {
                        format!("{v:.2}")
                    } else {
                        n.to_string()
                    };
                    let color = if v > 0.5 { WHITE } else { BLACK };
                    let size = (cell / 4).clamp(10, 28);
                    root.draw(&Text::new(
                        text,
                        (cx + cell / 2, cy + cell / 2),
                        (FAMILY, size).into_font().color(&color).pos(centre),
                    ))
                    .map_err(err)?;
                }
            }
            for (i, name) in classes.iter().enumerate() {
                let c = i as i32 * cell + cell / 2;
                root.draw(&Text::new(
                    short(name),
                    (x0 - 8, top + c),
                    (FAMILY, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    short(name),
                    (x0 + c, top + side + 8),
                    (FAMILY, 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(err)?;
            }
            root.draw(&Text::new(
                "predicted",
                (x0 + side / 2, top + side + 40),
                (FAMILY, 15).into_font().color(&BLACK).pos(centre),
            ))
            .map_err(err)?;
            root.draw(&Text::new(
                "true ↓",
                (x0 - 8, top - 14),
                (FAMILY, 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(err)?;
        }
        Ok(())
    })
}
