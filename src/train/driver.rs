//! The training loop every run shares (GPT-2, the encoder–decoder, BERT): step, log to `metrics.jsonl`, evaluate every `eval_every` steps
//! and redraw `loss.svg`, checkpoint (latest with the optimizer state, best without),
//! stop early at `stop_at` as if interrupted, and refuse a non-finite loss before it is
//! saved. What a step, an evaluation and a checkpoint are is the model's, through
//! [`Steps`].

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::train::metrics::{Metrics, Record};
use crate::train::run::{EvalReport, Observer, StepReport, TrainSettings};
use crate::train::state::{find_checkpoint, RunDir, TrainerState};

/// One model's side of the loop.
#[allow(async_fn_in_trait)]
pub trait Steps {
    /// Train optimizer step `step` (counted from 0) at `lr`: (mean loss, tokens counted).
    async fn step(&mut self, ctx: &GpuContext, step: u64, lr: f32) -> Result<(f32, usize)>;
    /// The validation loss.
    async fn evaluate(&mut self, ctx: &GpuContext) -> Result<f32>;
    /// A line for the evaluation report beyond the loss (e.g. accuracy), if any.
    async fn eval_note(&mut self, _ctx: &GpuContext) -> Result<Option<String>> {
        Ok(None)
    }
    /// Write a checkpoint of the model (and, with `full`, the optimizer) with `state`
    /// into `dir`, atomically.
    async fn save(
        &self,
        ctx: &GpuContext,
        state: &TrainerState,
        dir: &std::path::Path,
        full: bool,
    ) -> Result<()>;
}

/// The error of a non-finite loss at `step`: which checkpoint of `run` is kept (the last
/// one written, never the bad step's) and what to change.
fn non_finite(what: &str, step: u64, value: f32, run: &RunDir, state: &TrainerState) -> Error {
    let kept = match find_checkpoint(&run.latest()) {
        Some(d) => format!(
            "the last good checkpoint (step {}) is kept in {}",
            TrainerState::read(&d.join("trainer.json")).map_or(state.step, |s| s.step),
            d.display()
        ),
        None => "no checkpoint had been written yet".to_string(),
    };
    Error::Invalid(format!(
        "step {step}: the {what} is {value}; training stopped and {kept}. Lower --lr, raise \
         --warmup-steps or set --grad-clip, then start again (or --resume from the checkpoint)"
    ))
}

/// Run `steps` from `state.step` to the end of `ts.steps` (or `stop_at`); returns the
/// loss of every step trained in this session.
#[allow(clippy::too_many_arguments)]
pub async fn drive<S: Steps>(
    ctx: &GpuContext,
    steps: &mut S,
    run: &RunDir,
    ts: &TrainSettings,
    state: &mut TrainerState,
    resumed: bool,
    stop_at: Option<u64>,
    title: &str,
    obs: &mut dyn Observer,
) -> Result<Vec<f32>> {
    let mut metrics = Metrics::open(&run.metrics(), resumed.then_some(state.step))?;
    let total = ts.steps;
    let end = stop_at.map_or(total, |x| x.clamp(state.step, total));
    obs.begin(state.step, total);
    let session = Instant::now();
    let elapsed0 = state.elapsed_s;
    if !resumed && ts.eval_every > 0 {
        let val = steps.evaluate(ctx).await?;
        if !val.is_finite() {
            return Err(non_finite("validation loss", 0, val, run, state));
        }
        state.last_val_loss = Some(val);
        metrics.push(Record::Eval {
            step: 0,
            val_loss: val,
            train_loss: None,
            elapsed_s: 0.0,
        })?;
        obs.eval(&EvalReport {
            step: 0,
            total,
            val_loss: val,
            train_loss: None,
            best: false,
        });
        if let Some(n) = steps.eval_note(ctx).await? {
            obs.note(&n);
        }
    }
    let mut last_eval_step = state.step;
    let mut losses = Vec::new();
    for step in state.step..end {
        let lr = ts.schedule.at(step);
        let t0 = Instant::now();
        let (loss, tokens) = steps.step(ctx, step, lr).await?;
        let dt = t0.elapsed().as_secs_f64();
        if !loss.is_finite() {
            return Err(non_finite("training loss", step + 1, loss, run, state));
        }
        losses.push(loss);
        state.step = step + 1;
        state.data_position = state.step;
        state.tokens_seen += tokens as u64;
        state.elapsed_s = elapsed0 + session.elapsed().as_secs_f64();
        let tokens_per_s = tokens as f64 / dt.max(1e-9);
        metrics.push(Record::Train {
            step: state.step,
            loss,
            lr,
            tokens_per_s,
            elapsed_s: state.elapsed_s,
        })?;
        obs.step(&StepReport {
            step: state.step,
            total,
            loss,
            lr,
            tokens_per_s,
            last_val_loss: state.last_val_loss,
        });
        let at_eval = ts.eval_every > 0 && state.step.is_multiple_of(ts.eval_every);
        if !(at_eval || state.step == end) {
            continue;
        }
        let mut best = false;
        if at_eval || state.step == total {
            let val = steps.evaluate(ctx).await?;
            if !val.is_finite() {
                return Err(non_finite("validation loss", state.step, val, run, state));
            }
            let train_loss = metrics.train_mean_since(last_eval_step);
            last_eval_step = state.step;
            state.last_val_loss = Some(val);
            best = state.best_val_loss.is_none_or(|b| val < b);
            if best {
                state.best_val_loss = Some(val);
                state.best_step = Some(state.step);
            }
            metrics.push(Record::Eval {
                step: state.step,
                val_loss: val,
                train_loss,
                elapsed_s: state.elapsed_s,
            })?;
            metrics.plot(&run.plot(), title)?;
            obs.eval(&EvalReport {
                step: state.step,
                total,
                val_loss: val,
                train_loss,
                best,
            });
            if let Some(n) = steps.eval_note(ctx).await? {
                obs.note(&n);
            }
        }
        steps.save(ctx, state, &run.latest(), true).await?;
        if best {
            steps.save(ctx, state, &run.best(), false).await?;
        }
    }
    if end < total {
        obs.note(&format!(
            "stopped at step {end} of {total}; continue with --resume --out {}",
            run.root.display()
        ));
    }
    obs.end();
    Ok(losses)
}
