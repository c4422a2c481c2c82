//! `wgformer bench step`: a whole training step of a randomly initialised GPT-2 shape
//! (zero grads, forward, loss, backward, clip, AdamW: one submit), and with timestamps
//! the per-kernel time of its forward and backward.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::today;
use crate::error::Result;
use crate::gpu::{GpuContext, Profiler, Schedule};
use crate::model::half::Precision;
use crate::rng::Rng;

/// A training step's speed: the median over `steps` timed steps after one warm-up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepReport {
    pub adapter: String,
    pub date: String,
    pub model: String,
    pub batch: usize,
    pub seq: usize,
    pub ms_per_step: f64,
    pub tokens_per_s: f64,
    pub first_loss: f32,
    pub last_loss: f32,
    /// Per-kernel GPU time of one forward + backward, largest first (pipeline, launches,
    /// ms), when the adapter has timestamp queries.
    pub profile: Vec<(String, usize, f64)>,
}

impl StepReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Adapter: {} — {}\n\n{} at B={}, T={}: {:.1} ms/step, {:.0} tokens/s (loss {:.3} → {:.3})\n",
            self.adapter,
            self.date,
            self.model,
            self.batch,
            self.seq,
            self.ms_per_step,
            self.tokens_per_s,
            self.first_loss,
            self.last_loss
        );
        if !self.profile.is_empty() {
            let total: f64 = self.profile.iter().map(|p| p.2).sum();
            s +=
                "\n| kernel (forward + backward) | launches | ms | share |\n|---|---:|---:|---:|\n";
            for (k, n, ms) in &self.profile {
                s += &format!("| {k} | {n} | {ms:.2} | {:.1} % |\n", 100.0 * ms / total);
            }
        }
        s
    }
}

/// Time training steps of a randomly initialised `cfg` at batch `b`, length `t`, on random
/// tokens (the same batch every step, so the loss must fall), its matmuls reading weights
/// in `precision`.
pub fn run_step(
    ctx: &GpuContext,
    cfg: &crate::model::Gpt2Config,
    name: &str,
    b: usize,
    t: usize,
    steps: usize,
    precision: Precision,
) -> Result<StepReport> {
    use crate::model::gpt2::{
        record_backward, record_forward, record_loss, Gpt2, OptimConfig, Trainer,
    };
    let mut rng = Rng::new(7);
    let n = b * t;
    let x: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();
    let y: Vec<i32> = (0..n)
        .map(|_| rng.below(cfg.vocab_size as u64) as i32)
        .collect();

    let model = Gpt2::init(ctx, cfg.clone(), 1)?.with_precision(ctx, precision)?;
    let mut trainer = Trainer::new(ctx, model, b, t, OptimConfig::default())?;
    let first_loss = ctx.block_on(trainer.step(ctx, &x, &y, 1e-3))?;
    let mut times = Vec::new();
    let mut last_loss = first_loss;
    for _ in 0..steps.max(1) {
        let t0 = Instant::now();
        last_loss = ctx.block_on(trainer.step(ctx, &x, &y, 1e-3))?;
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let secs = times[times.len() / 2];
    let mut profile = Vec::new();
    if ctx.has_timestamps() {
        // The trainer's own activations (logits in vocabulary chunks where whole ones
        // would be large, f16 copies on the mixed path), its forward, loss and backward.
        let mut s = Schedule::new("forward+backward");
        record_forward(&mut s, ctx, &trainer.model, &trainer.acts)?;
        record_loss(&mut s, ctx, cfg, &trainer.acts)?;
        record_backward(
            &mut s,
            ctx,
            &trainer.model,
            &trainer.grads,
            &trainer.acts,
            &trainer.dacts,
        )?;
        trainer
            .acts
            .write_batch(ctx, cfg.vocab_size, &x, Some(&y))?;
        if let Some(p) = Profiler::new(ctx, &s) {
            // After the timed steps and, on a GPU, one replay of its own, so that the
            // clocks have left their idle state (an H200's first pass ran at 345 MHz,
            // its kernels adding up to 1.7x the step).
            if !ctx.is_cpu() {
                s.run(ctx);
                let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
            }
            s.run_profiled(ctx, &p);
            let times = ctx.block_on(p.read(ctx))?;
            profile = crate::gpu::schedule::summarize(&times)
                .into_iter()
                .map(|(k, c, ns)| (k, c, ns * 1e-6))
                .collect();
        }
    }

    Ok(StepReport {
        adapter: ctx.adapter_name(),
        date: today(),
        model: match precision {
            Precision::F32 => name.to_string(),
            p => format!("{name} {p}"),
        },
        batch: b,
        seq: t,
        ms_per_step: secs * 1e3,
        tokens_per_s: n as f64 / secs,
        first_loss,
        last_loss,
        profile,
    })
}
