//! The run's record: `metrics.jsonl`, one JSON object per training step
//! (`{"kind":"train","step":…,"loss":…,"lr":…,"tokens_per_s":…,"elapsed_s":…}`) and per
//! evaluation (`{"kind":"eval","step":…,"val_loss":…,"train_loss":…,"elapsed_s":…}`),
//! appended and flushed as they happen; and `loss.svg`, the train and validation loss
//! against step, redrawn at each evaluation. Losses are written as the shortest decimal
//! that reads back to the same f32, so the log compares runs bit for bit. On resume the
//! log is cut back to the checkpoint's step, so it never holds steps trained twice.

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::checkpoint::write_atomic;

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// After optimizer step `step` (counted from 1): its loss (before the update).
    Train {
        step: u64,
        loss: f32,
        lr: f32,
        tokens_per_s: f64,
        elapsed_s: f64,
    },
    /// An evaluation after `step` steps (0 = before training).
    Eval {
        step: u64,
        val_loss: f32,
        /// Mean training loss of the steps since the previous evaluation.
        train_loss: Option<f32>,
        elapsed_s: f64,
    },
}

impl Record {
    pub fn step(&self) -> u64 {
        match self {
            Record::Train { step, .. } | Record::Eval { step, .. } => *step,
        }
    }
}

/// The metrics log, open for appending, with every record in memory for the plot.
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
    pub records: Vec<Record>,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl Metrics {
    /// Start a new log at `path`, or with `resume_step`, keep the records of the existing
    /// one up to that step (a run that went past its last checkpoint before it stopped
    /// logged steps the resumed run repeats).
    pub fn open(path: &Path, resume_step: Option<u64>) -> Result<Self> {
        let mut records = Vec::new();
        if let Some(step) = resume_step {
            if path.exists() {
                records = Self::read(path)?;
                records.retain(|r| r.step() <= step);
            }
            let mut text = String::new();
            for r in &records {
                text.push_str(&serde_json::to_string(r).expect("record serializes"));
                text.push('\n');
            }
            write_atomic(path, text.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io_err(path, e))?;
        if resume_step.is_none() {
            file.set_len(0).map_err(|e| io_err(path, e))?;
        }
        Ok(Metrics {
            path: path.to_path_buf(),
            file,
            records,
        })
    }

    /// Every record of the log at `path`.
    pub fn read(path: &Path) -> Result<Vec<Record>> {
        let text = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::Invalid(format!("{} line {}: {e}", path.display(), i + 1)))
            })
            .collect()
    }

    /// Append `r` to the log (flushed at once) and keep it for the plot.
    pub fn push(&mut self, r: Record) -> Result<()> {
        let mut line = serde_json::to_string(&r).expect("record serializes");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| io_err(&self.path, e))?;
        self.records.push(r);
        Ok(())
    }

    /// Mean loss of the training records after step `after`.
    pub fn train_mean_since(&self, after: u64) -> Option<f32> {
        let losses: Vec<f64> = self
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Train { step, loss, .. } if *step > after => Some(*loss as f64),
                _ => None,
            })
            .collect();
        (!losses.is_empty()).then(|| (losses.iter().sum::<f64>() / losses.len() as f64) as f32)
    }

    /// Draw the train and validation loss against step into the SVG file `path`.
    pub fn plot(&self, path: &Path, title: &str) -> Result<()> {
        let svg = plot_svg(&self.records, title)
            .map_err(|e| Error::Invalid(format!("{}: drawing the plot: {e}", path.display())))?;
        write_atomic(path, svg.as_bytes())
    }
}

/// Training losses smoothed by an exponential moving average over ~`span` steps.
fn smooth(points: &[(f64, f64)], span: usize) -> Vec<(f64, f64)> {
    let alpha = 2.0 / (span as f64 + 1.0);
    let mut ema = None;
    points
        .iter()
        .map(|&(x, y)| {
            let e = match ema {
                None => y,
                Some(prev) => prev + alpha * (y - prev),
            };
            ema = Some(e);
            (x, e)
        })
        .collect()
}

fn plot_svg(
    records: &[Record],
    title: &str,
) -> std::result::Result<String, Box<dyn std::error::Error>> {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } if loss.is_finite() => {
                Some((*step as f64, *loss as f64))
            }
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval { step, val_loss, .. } if val_loss.is_finite() => {
                Some((*step as f64, *val_loss as f64))
            }
            _ => None,
        })
        .collect();
    let smoothed = smooth(&train, (train.len() / 50).max(5));
    let all: Vec<f64> = train.iter().chain(&val).map(|p| p.1).collect();
    let x_max = train.iter().chain(&val).map(|p| p.0).fold(1.0f64, f64::max);
    let y_min = all.iter().copied().fold(f64::INFINITY, f64::min);
    // The first steps of a fresh model sit far above the rest; cap the axis at the
    // highest validation loss or smoothed training loss so the descent stays readable.
    let y_top = val
        .iter()
        .chain(&smoothed)
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let (y_lo, y_hi) = if y_min.is_finite() && y_top.is_finite() {
        let pad = ((y_top - y_min) * 0.05).max(0.01);
        ((y_min - pad).max(0.0), y_top + pad)
    } else {
        (0.0, 1.0)
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..x_max, y_lo..y_hi)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let faint = RGBColor(160, 190, 230);
        chart.draw_series(LineSeries::new(
            train.iter().copied(),
            faint.stroke_width(1),
        ))?;
        chart
            .draw_series(LineSeries::new(smoothed, BLUE.stroke_width(2)))?
            .label("train (smoothed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(2)))?
            .label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}
