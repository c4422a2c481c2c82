//! The command line's view of a run: an indicatif progress bar with step, loss,
//! validation loss, learning rate, tokens/s and ETA, and a line per evaluation. When
//! stderr is not a terminal (CI, a pipe) the bar hides itself, so a plain line is printed
//! every twentieth of the run instead.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::train::run::{EvalReport, Observer, StepReport};

/// [`Observer`] drawing a progress bar on stderr and printing notes and evaluations.
pub struct ProgressObserver {
    bar: Option<ProgressBar>,
    /// Smoothed tokens/s (exponential moving average).
    speed: Option<f64>,
    log_every: u64,
}

impl Default for ProgressObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressObserver {
    pub fn new() -> Self {
        ProgressObserver {
            bar: None,
            speed: None,
            log_every: 1,
        }
    }

    /// Print `line` above the bar (or plainly when there is none or it is hidden).
    fn print(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }
}

fn human(tokens_per_s: f64) -> String {
    if tokens_per_s >= 1e6 {
        format!("{:.2}M", tokens_per_s / 1e6)
    } else if tokens_per_s >= 1e3 {
        format!("{:.1}k", tokens_per_s / 1e3)
    } else {
        format!("{tokens_per_s:.0}")
    }
}

impl Observer for ProgressObserver {
    fn note(&mut self, line: &str) {
        self.print(line);
    }

    fn begin(&mut self, start: u64, total: u64) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner:.green} {bar:20.cyan/blue} {pos}/{len} {msg} ETA {eta}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_position(start);
        bar.enable_steady_tick(Duration::from_millis(250));
        self.log_every = (total / 20).max(1);
        self.bar = Some(bar);
    }

    fn step(&mut self, r: &StepReport) {
        let speed = match self.speed {
            None => r.tokens_per_s,
            Some(s) => s + 0.1 * (r.tokens_per_s - s),
        };
        self.speed = Some(speed);
        let val = r
            .last_val_loss
            .map_or("-".to_string(), |v| format!("{v:.3}"));
        let msg = format!(
            "loss {:.3} val {val} lr {:.1e} {} tok/s",
            r.loss,
            r.lr,
            human(speed)
        );
        if let Some(b) = &self.bar {
            b.set_position(r.step);
            b.set_message(msg.clone());
            if b.is_hidden() && (r.step.is_multiple_of(self.log_every) || r.step == r.total) {
                println!("step {}/{}: {msg}", r.step, r.total);
            }
        }
    }

    fn eval(&mut self, r: &EvalReport) {
        let train = r
            .train_loss
            .map_or(String::new(), |t| format!("train loss {t:.4}, "));
        self.print(&format!(
            "step {}/{}: {train}validation loss {:.4}{}",
            r.step,
            r.total,
            r.val_loss,
            if r.best { " (best so far, saved)" } else { "" }
        ));
    }

    fn end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish();
        }
    }
}
