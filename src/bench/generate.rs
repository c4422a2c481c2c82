//! `wgformer bench generate`: KV-cached generation speed of a GPT-2 shape (random weights
//! or a checkpoint): prefill tokens/s over a random prompt, decode tokens/s over greedy
//! steps (wall clock, each step's submit and 4-byte readback included), and with
//! timestamps where one decode step's device time goes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::today;
use crate::error::Result;
use crate::gpu::Profiler;
use crate::infer::{GenerateOptions, Generator, Model};
use crate::kernels::sampling::SampleSettings;
use crate::model::params::num_parameters;
use crate::rng::Rng;

/// Prefill and decode speed of one model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GenerateReport {
    pub adapter: String,
    pub date: String,
    pub model: String,
    pub parameters: usize,
    pub prompt_tokens: usize,
    pub prefill_tokens_per_s: f64,
    /// Tokens produced by decode steps (all but the first, which the prefill draws).
    pub decode_tokens: usize,
    pub decode_tokens_per_s: f64,
    pub ms_per_decode_step: f64,
    /// Decode steps timed one by one after the generation (each a feed of one token and
    /// its readback): the median and the slowest, in ms. Beside the mean above they show
    /// whether a step's wall time is steady or a few slow steps (a lazy allocation or
    /// compile) raise the mean.
    #[serde(default)]
    pub decode_step_ms_median: f64,
    #[serde(default)]
    pub decode_step_ms_max: f64,
    /// Launches of one decode step's pass.
    pub launches_per_step: usize,
    /// Device time of one decode step by kernel, largest first (kernel, launches, ms),
    /// when the adapter has timestamp queries.
    pub profile: Vec<(String, usize, f64)>,
    /// Device time of the prefill pass by kernel, largest first, with timestamps.
    #[serde(default)]
    pub prefill_profile: Vec<(String, usize, f64)>,
    /// Wall-clock ms of one decode step at positions across the context (position, ms),
    /// when asked for: it may grow only by the attention over the cache, never by
    /// recomputing the prefix.
    #[serde(default)]
    pub at_positions: Vec<(usize, f64)>,
}

impl GenerateReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Adapter: {} — {}\n\n{} ({:.1}M parameters): prefill {:.1} tok/s ({} prompt \
             tokens), decode {:.2} tok/s ({:.2} ms/step over {} steps, {} launches each; \
             one by one: median {:.2} ms, slowest {:.2} ms)\n",
            self.adapter,
            self.date,
            self.model,
            self.parameters as f64 / 1e6,
            self.prefill_tokens_per_s,
            self.prompt_tokens,
            self.decode_tokens_per_s,
            self.ms_per_decode_step,
            self.decode_tokens,
            self.launches_per_step,
            self.decode_step_ms_median,
            self.decode_step_ms_max
        );
        if !self.at_positions.is_empty() {
            s += "\n| position | ms/decode step |\n|---:|---:|\n";
            for (pos, ms) in &self.at_positions {
                s += &format!("| {pos} | {ms:.2} |\n");
            }
        }
        if !self.prefill_profile.is_empty() {
            let total: f64 = self.prefill_profile.iter().map(|p| p.2).sum();
            s += "\n| kernel (the prefill) | launches | ms | share |\n|---|---:|---:|---:|\n";
            for (k, n, ms) in &self.prefill_profile {
                s += &format!("| {k} | {n} | {ms:.3} | {:.1} % |\n", 100.0 * ms / total);
            }
        }
        if !self.profile.is_empty() {
            let total: f64 = self.profile.iter().map(|p| p.2).sum();
            s += "\n| kernel (one decode step) | launches | ms | share |\n|---|---:|---:|---:|\n";
            for (k, n, ms) in &self.profile {
                s += &format!("| {k} | {n} | {ms:.3} | {:.1} % |\n", 100.0 * ms / total);
            }
        }
        s
    }
}

/// Greedy generation of `new_tokens` after a random prompt of `prompt_len` ids, timed
/// after one untimed warm-up generation that compiles every pipeline; with
/// `at_positions`, also one decode step at positions across the context.
pub fn run_generate(
    model: Arc<Model>,
    prompt_len: usize,
    new_tokens: usize,
    at_positions: bool,
) -> Result<GenerateReport> {
    let ctx = model.ctx.clone();
    let cfg = model.config().clone();
    let mut generator = Generator::new(model.clone())?;
    generator.check_fits(prompt_len, new_tokens)?;
    let mut rng = Rng::new(7);
    let prompt: Vec<u32> = (0..prompt_len.max(1))
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    ctx.block_on(generator.generate(&prompt, &GenerateOptions::greedy(new_tokens.min(2))))?;
    let out = ctx.block_on(generator.generate(&prompt, &GenerateOptions::greedy(new_tokens)))?;
    let st = &out.stats;

    // One more decode step, then its pass replayed under the profiler (a replay redoes
    // the same position: it skips only the state a feed writes).
    let dec = generator.decoder();
    dec.set_position(0, prompt.len())?;
    ctx.block_on(dec.feed(&ctx, &[&[1]], &[SampleSettings::greedy()]))?;
    // Decode steps one by one, from the end of the prompt (the cache past it holds the
    // greedy continuation just generated, or this loop's own tokens).
    let mut steps = Vec::new();
    dec.set_position(0, prompt.len())?;
    let mut last = 1;
    for _ in 0..new_tokens.clamp(1, 16).min(cfg.n_positions - prompt.len()) {
        let t0 = std::time::Instant::now();
        last = ctx.block_on(dec.feed(&ctx, &[&[last]], &[SampleSettings::greedy()]))?[0] as i32;
        steps.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    steps.sort_by(f64::total_cmp);
    let mut times = Vec::new();
    if at_positions {
        let n = cfg.n_positions;
        for pos in [prompt.len(), n / 4, n / 2, n - 2] {
            // The cache past the prompt holds whatever it holds: only the time matters.
            let reps = 3;
            let mut ms = Vec::new();
            for _ in 0..reps {
                dec.set_position(0, pos)?;
                let t0 = std::time::Instant::now();
                ctx.block_on(dec.feed(&ctx, &[&[1]], &[SampleSettings::greedy()]))?;
                ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            ms.sort_by(f64::total_cmp);
            times.push((pos, ms[reps / 2]));
        }
    }
    // The prefill pass, profiled the same way after a feed of the prompt.
    let mut prefill_profile = Vec::new();
    dec.set_position(0, 0)?;
    let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
    ctx.block_on(dec.feed(&ctx, &[&ids], &[SampleSettings::greedy()]))?;
    if let Some(pass) = dec.prefill_schedule(ids.len()) {
        if let Some(p) = Profiler::new(&ctx, pass) {
            pass.run_profiled(&ctx, &p);
            prefill_profile = crate::gpu::schedule::summarize(&ctx.block_on(p.read(&ctx))?)
                .into_iter()
                .map(|(k, c, ns)| (k, c, ns * 1e-6))
                .collect();
        }
    }
    let launches = dec.launches(1);
    let mut profile = Vec::new();
    if let Some(pass) = dec.schedule(1) {
        if let Some(p) = Profiler::new(&ctx, pass) {
            pass.run_profiled(&ctx, &p);
            let times = ctx.block_on(p.read(&ctx))?;
            profile = crate::gpu::schedule::summarize(&times)
                .into_iter()
                .map(|(k, c, ns)| (k, c, ns * 1e-6))
                .collect();
        }
    }
    Ok(GenerateReport {
        adapter: ctx.adapter_name(),
        date: today(),
        model: model.name.clone(),
        parameters: num_parameters(&cfg),
        prompt_tokens: st.prompt_tokens,
        prefill_tokens_per_s: st.prefill_tokens_per_sec(),
        decode_tokens: st.decode_tokens,
        decode_tokens_per_s: st.decode_tokens_per_sec(),
        ms_per_decode_step: 1e3 * st.decode_secs / st.decode_tokens.max(1) as f64,
        decode_step_ms_median: steps.get(steps.len() / 2).copied().unwrap_or(0.0),
        decode_step_ms_max: steps.last().copied().unwrap_or(0.0),
        launches_per_step: launches,
        profile,
        prefill_profile,
        at_positions: times,
    })
}
