//! The text sample a training run prints when it ends (nanoGPT's sample.py: temperature
//! 0.8, top-k 200): a forward pass at B = 1 over the last T tokens, the logits of the
//! last position read back, and a token drawn on the CPU from a seeded RNG. Small and
//! self-contained on purpose; `wgformer generate` (crate::infer) is the real tool.

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Readback, Schedule};
use crate::model::gpt2::{record_forward, Activations, Gpt2};
use crate::rng::Rng;
use crate::train::tokenize::{decode, encode_text, eot_id};

/// How to sample.
#[derive(Clone, Copy, Debug)]
pub struct SampleOptions {
    /// New tokens to draw.
    pub tokens: usize,
    pub temperature: f32,
    /// Draw among the k most likely tokens only (0 = all).
    pub top_k: usize,
    pub seed: u64,
    /// Context window T of each forward pass (at most the model's).
    pub window: usize,
}

/// Draw a token from `logits` (V) at `temperature` among the `top_k` most likely.
pub fn draw(logits: &[f32], temperature: f32, top_k: usize, rng: &mut Rng) -> usize {
    if temperature <= 0.0 {
        return logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if top_k > 0 && top_k < logits.len() {
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(top_k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / temperature as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() as f64 * total;
    for (w, &i) in weights.iter().zip(&idx) {
        if u < *w {
            return i;
        }
        u -= w;
    }
    *idx.last().unwrap_or(&0)
}

/// The ids a sample starts from: `prompt` if it encodes to something, else
/// `<|endoftext|>`, else token 0.
pub fn start_ids(tok: &Tokenizer, prompt: &str) -> Vec<u32> {
    match encode_text(tok, prompt) {
        Ok(ids) if !ids.is_empty() => ids,
        _ => vec![eot_id(tok).unwrap_or(0)],
    }
}

/// Continue `prompt` (ids) by `opts.tokens` sampled tokens; returns the new ids.
pub async fn sample(
    ctx: &GpuContext,
    model: &Gpt2,
    prompt: &[u32],
    opts: &SampleOptions,
) -> Result<Vec<u32>> {
    let cfg = &model.config;
    let (v, t) = (cfg.vocab_size, opts.window.clamp(1, cfg.n_positions));
    if prompt.is_empty() {
        return Err(Error::Invalid(
            "a sample needs at least one prompt token".into(),
        ));
    }
    let acts = Activations::new(ctx, cfg, 1, t, "sample.")?;
    let mut fwd = Schedule::new("sample forward");
    record_forward(&mut fwd, ctx, model, &acts)?;
    let readback = Readback::new(ctx, "sample logits", (v * 4) as u64);
    let mut rng = Rng::new(opts.seed);
    let mut ids: Vec<u32> = prompt.to_vec();
    let mut out = Vec::with_capacity(opts.tokens);
    for _ in 0..opts.tokens {
        let start = ids.len().saturating_sub(t);
        let window = &ids[start..];
        let mut x: Vec<i32> = window.iter().map(|&i| i as i32).collect();
        x.resize(t, 0);
        acts.write_batch(ctx, v, &x, None)?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sample"),
            });
        fwd.encode(&mut enc);
        let row = ((window.len() - 1) * v * 4) as u64;
        enc.copy_buffer_to_buffer(
            &acts.logits.buffer,
            row,
            &readback.buffer,
            0,
            (v * 4) as u64,
        );
        ctx.submit(enc.finish());
        let logits: Vec<f32> = readback.read(ctx).await?;
        let next = draw(&logits[..v], opts.temperature, opts.top_k, &mut rng) as u32;
        ids.push(next);
        out.push(next);
    }
    Ok(out)
}

/// Sample `opts.tokens` tokens after `prompt` and decode prompt + sample as text.
pub async fn sample_text(
    ctx: &GpuContext,
    model: &Gpt2,
    tok: &Tokenizer,
    prompt: &str,
    opts: &SampleOptions,
) -> Result<String> {
    let start = start_ids(tok, prompt);
    let new = sample(ctx, model, &start, opts).await?;
    let all: Vec<u32> = start.iter().chain(&new).copied().collect();
    decode(tok, &all)
}
