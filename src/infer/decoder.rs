//! The KV-cached forward pass of a GPT-2, for generation. A [`Decoder`] allocates, once
//! per (model, batch rows B, context maxT), the key and value caches of every layer, one
//! set of activations for a pass of up to maxT positions per row, the logits of each
//! row's last position and the sampler's tensors; it records, once, a pass for each
//! bucket of T = 1, 2, 4, … up to maxT positions per row. [`Decoder::feed`] picks the
//! smallest bucket that holds the new tokens, writes the tokens, each row's position and
//! length and the sampling settings with `queue.write_buffer`, replays the recorded pass
//! in one submit and reads back only the B sampled ids. A prompt is one feed (prefill);
//! each generated token is one feed at T = 1 (decode), whose cost does not grow with the
//! position except in attention. Text, stop conditions and streaming are
//! `infer::generator`'s; this module deals in token ids.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Readback, Schedule, Slot, Tensor};
use crate::kernels::attention::attention_forward;
use crate::kernels::decode::{
    decode_append, decode_attention, decode_embed, decode_gather, decode_logits, DecodeRow,
};
use crate::kernels::layernorm::{layernorm_forward, residual_layernorm_forward};
use crate::kernels::matmul::{matmul_forward, matmul_forward_gelu_in};
use crate::kernels::residual::residual_forward;
use crate::kernels::sampling::{sample_forward, SampleSettings};
use crate::model::gpt2::Gpt2;
use crate::model::Gpt2Config;

/// The keys and values of every position fed so far, per layer (B, NH, maxT, HS).
pub struct KvCache {
    pub k: Vec<Tensor>, // L × (B, NH, maxT, HS)
    pub v: Vec<Tensor>, // L × (B, NH, maxT, HS)
}

impl KvCache {
    pub fn new(ctx: &GpuContext, cfg: &Gpt2Config, b: usize, max_t: usize) -> Result<Self> {
        let shape = [b, cfg.n_head, max_t, cfg.head_size()];
        let make = |kind: &str| {
            (0..cfg.n_layer)
                .map(|l| Tensor::zeros(ctx, &format!("kv.h.{l}.{kind}"), &shape, DType::F32))
                .collect::<Result<Vec<_>>>()
        };
        Ok(KvCache {
            k: make("k")?,
            v: make("v")?,
        })
    }

    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|t| t.size_bytes()).sum()
    }
}

/// Activations of a pass, allocated for (B, maxT) and shared by every bucket: a pass of T
/// positions sees the first B·T rows of each as (B, T, ·). Layers run one after another,
/// so one set serves them all (inference keeps nothing for a backward pass).
struct PassActs {
    tokens: Tensor,    // (B, T) i32
    x: Tensor,         // (B, T, C): the residual stream entering each layer
    x2: Tensor,        // (B, T, C): the residual stream after attention
    ln: Tensor,        // (B, T, C)
    ln_mean: Tensor,   // (B, T)
    ln_rstd: Tensor,   // (B, T)
    qkv: Tensor,       // (B, T, 3C)
    att_stats: Tensor, // (B, NH, T): a prefill's attention row statistics (unused after)
    atty: Tensor,      // (B, T, C)
    attproj: Tensor,   // (B, T, C)
    fch: Tensor,       // (B, T, 4C); the projection after it applies the GELU on load
    fcproj: Tensor,    // (B, T, C)
}

impl PassActs {
    fn new(ctx: &GpuContext, cfg: &Gpt2Config, b: usize, max_t: usize) -> Result<Self> {
        let (c, f) = (cfg.n_embd, cfg.mlp_width());
        let n = b * max_t;
        let t = |label: &str, elems: usize| {
            Tensor::zeros(ctx, &format!("decode.{label}"), &[n, elems], DType::F32)
        };
        Ok(PassActs {
            tokens: Tensor::zeros(ctx, "decode.tokens", &[n], DType::I32)?,
            x: t("x", c)?,
            x2: t("x2", c)?,
            ln: t("ln", c)?,
            ln_mean: t("ln_mean", 1)?,
            ln_rstd: t("ln_rstd", 1)?,
            qkv: t("qkv", 3 * c)?,
            att_stats: t("att_stats", cfg.n_head)?,
            atty: t("atty", c)?,
            attproj: t("attproj", c)?,
            fch: t("fch", f)?,
            fcproj: t("fcproj", c)?,
        })
    }

    fn all(&self) -> [&Tensor; 12] {
        [
            &self.att_stats,
            &self.tokens,
            &self.x,
            &self.x2,
            &self.ln,
            &self.ln_mean,
            &self.ln_rstd,
            &self.qkv,
            &self.atty,
            &self.attproj,
            &self.fch,
            &self.fcproj,
        ]
    }
}

/// `t` seen as a tensor of `shape` whose elements are its first ones: the same buffer,
/// bound whole, so the kernels may index only the first numel(shape) elements.
fn view(t: &Tensor, shape: &[usize]) -> Tensor {
    let numel: usize = shape.iter().product();
    assert!(numel <= t.numel(), "view {shape:?} of {}", t.label);
    Tensor {
        buffer: t.buffer.clone(),
        shape: shape.to_vec(),
        dtype: t.dtype,
        label: t.label.clone(),
    }
}

/// The buckets of positions per row a pass is recorded for: powers of two below `max_t`,
/// then `max_t` itself.
pub fn buckets(max_t: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..)
        .map(|i| 1usize << i)
        .take_while(|&t| t < max_t)
        .collect();
    v.push(max_t);
    v
}

/// A GPT-2's KV cache, pass activations and recorded passes for B rows of up to maxT
/// positions each.
pub struct Decoder {
    cfg: Gpt2Config,
    b: usize,
    max_t: usize,
    cache: KvCache,
    acts: PassActs,
    last: Tensor,     // (B, C): each row's last real position, from decode_gather
    lnf: Tensor,      // (B, C)
    lnf_mean: Tensor, // (B)
    lnf_rstd: Tensor, // (B)
    logits: Tensor,   // (B, V): of each row's last real position
    ids: Tensor,      // (B) u32: the sampled tokens
    state: Tensor,    // (B) DecodeRow
    settings: Tensor, // (B) SampleSettings
    /// (T, the pass for T positions per row, and for T ≥ 2 its twin for feeds in which
    /// every row starts at position 0), for every bucket.
    passes: Vec<(usize, Schedule, Option<Schedule>)>,
    readback: Readback,
    /// Positions each row has filled.
    pos: Vec<usize>,
}

impl Decoder {
    /// Allocate the cache and activations for `b` rows of up to `max_t` positions
    /// (at most the model's context) and record every bucket's pass.
    pub fn new(ctx: &GpuContext, model: &Gpt2, b: usize, max_t: usize) -> Result<Self> {
        let cfg = model.config.clone();
        if b == 0 || max_t == 0 || max_t > cfg.n_positions {
            return Err(Error::Invalid(format!(
                "a decoder needs 1 or more rows and a context of 1..={} positions (the \
                 model's), got {b} rows of {max_t}",
                cfg.n_positions
            )));
        }
        let (c, v) = (cfg.n_embd, cfg.vocab_size);
        let f32t = |label: &str, shape: &[usize]| Tensor::zeros(ctx, label, shape, DType::F32);
        let mut d = Decoder {
            cache: KvCache::new(ctx, &cfg, b, max_t)?,
            acts: PassActs::new(ctx, &cfg, b, max_t)?,
            last: f32t("decode.last", &[b, c])?,
            lnf: f32t("decode.lnf", &[b, c])?,
            lnf_mean: f32t("decode.lnf_mean", &[b])?,
            lnf_rstd: f32t("decode.lnf_rstd", &[b])?,
            logits: f32t("decode.logits", &[b, v])?,
            ids: Tensor::zeros(ctx, "decode.ids", &[b], DType::U32)?,
            state: DecodeRow::tensor(ctx, "decode.state", b)?,
            settings: SampleSettings::tensor(ctx, "decode.settings", b)?,
            passes: Vec::new(),
            readback: Readback::new(ctx, "sampled ids", (4 * b) as u64),
            pos: vec![0; b],
            cfg,
            b,
            max_t,
        };
        for t in buckets(max_t) {
            let pass = d.record(ctx, model, t, false)?;
            let fresh = if t > 1 {
                Some(d.record(ctx, model, t, true)?)
            } else {
                None
            };
            d.passes.push((t, pass, fresh));
        }
        Ok(d)
    }

    /// Record the pass for `t` positions per row: embed → L blocks over the cache →
    /// the last real row → final layernorm → logits (B, V) → sample → copy the ids out.
    /// `fresh`: for feeds in which every row starts at position 0 (a prompt's prefill),
    /// where the cache holds nothing older than the pass, so attention is the training
    /// pass's causal attention over the new positions (flash-style or batched matmuls,
    /// many queries per launch) instead of `decode_attention` (one query per workgroup).
    fn record(&self, ctx: &GpuContext, model: &Gpt2, t: usize, fresh: bool) -> Result<Schedule> {
        let cfg = &self.cfg;
        // The block matrices in the model's precision (f16 copies on the f16 path).
        let p = model.compute_params();
        let (b, c, nh, v, f) = (
            self.b,
            cfg.n_embd,
            cfg.n_head,
            cfg.vocab_size,
            cfg.mlp_width(),
        );
        let (bt, max_t) = (b * t, self.max_t);
        let eps = cfg.layer_norm_epsilon as f32;
        let a = &self.acts;
        let btc = [b, t, c];
        let tokens = view(&a.tokens, &[b, t]);
        let x = view(&a.x, &btc);
        let x2 = view(&a.x2, &btc);
        let ln = view(&a.ln, &btc);
        let ln_mean = view(&a.ln_mean, &[b, t]);
        let ln_rstd = view(&a.ln_rstd, &[b, t]);
        let qkv = view(&a.qkv, &[b, t, 3 * c]);
        let att_stats = view(&a.att_stats, &[b, nh, t]);
        let atty = view(&a.atty, &btc);
        let attproj = view(&a.attproj, &btc);
        let fch = view(&a.fch, &[b, t, f]);
        let fcproj = view(&a.fcproj, &btc);
        let st = &self.state;

        let fresh_label = if fresh { " from position 0" } else { "" };
        let mut s = Schedule::new(&format!("decode pass T={t}{fresh_label}"));
        decode_embed(
            &mut s, ctx, &x, &tokens, &p.wte, &p.wpe, st, b, t, c, v, max_t,
        )?;
        // Layer 0's ln_1 reads the embeddings; every later ln_1 is fused with the residual
        // add that ends the layer before (below).
        if let Some(w) = p.layers.first() {
            layernorm_forward(
                &mut s, ctx, &ln, &ln_mean, &ln_rstd, &x, &w.ln_1_w, &w.ln_1_b, b, t, c, eps,
            )?;
        }
        for (l, w) in p.layers.iter().enumerate() {
            let (kc, vc) = (&self.cache.k[l], &self.cache.v[l]);
            matmul_forward(
                &mut s,
                ctx,
                &qkv,
                &ln,
                &w.c_attn_w,
                Some(&w.c_attn_b),
                bt,
                c,
                3 * c,
            )?;
            decode_append(&mut s, ctx, kc, vc, &qkv, st, b, t, c, nh, max_t)?;
            if fresh {
                attention_forward(&mut s, ctx, &atty, &att_stats, &qkv, b, t, c, nh)?;
            } else {
                decode_attention(&mut s, ctx, &atty, &qkv, kc, vc, st, b, t, c, nh, max_t)?;
            }
            matmul_forward(
                &mut s,
                ctx,
                &attproj,
                &atty,
                &w.c_proj_w,
                Some(&w.c_proj_b),
                bt,
                c,
                c,
            )?;
            // x2 = x + attproj; ln = ln_2(x2)
            residual_layernorm_forward(
                &mut s, ctx, &x2, &ln, &ln_mean, &ln_rstd, &x, &attproj, &w.ln_2_w, &w.ln_2_b, b,
                t, c, eps,
            )?;
            matmul_forward(&mut s, ctx, &fch, &ln, &w.c_fc_w, Some(&w.c_fc_b), bt, c, f)?;
            // fcproj = gelu(fch) · W_proj + b: the GELU applied as fch is loaded.
            matmul_forward_gelu_in(
                &mut s,
                ctx,
                &fcproj,
                &fch,
                &w.mlp_proj_w,
                Some(&w.mlp_proj_b),
                bt,
                f,
                c,
            )?;
            // x = x2 + fcproj, and the next layer's ln_1 of it. After the last layer the
            // add stays alone: ln_f reads only each row's last position (decode_gather).
            match p.layers.get(l + 1) {
                Some(next) => residual_layernorm_forward(
                    &mut s,
                    ctx,
                    &x,
                    &ln,
                    &ln_mean,
                    &ln_rstd,
                    &x2,
                    &fcproj,
                    &next.ln_1_w,
                    &next.ln_1_b,
                    b,
                    t,
                    c,
                    eps,
                )?,
                None => residual_forward(&mut s, ctx, &x, &x2, &fcproj, bt * c)?,
            }
        }
        decode_gather(&mut s, ctx, &self.last, &x, st, b, t, c)?;
        layernorm_forward(
            &mut s,
            ctx,
            &self.lnf,
            &self.lnf_mean,
            &self.lnf_rstd,
            &self.last,
            &p.ln_f_w,
            &p.ln_f_b,
            b,
            1,
            c,
            eps,
        )?;
        decode_logits(&mut s, ctx, &self.logits, &self.lnf, model.head(), b, c, v)?;
        sample_forward(&mut s, ctx, &self.ids, &self.logits, &self.settings, b, v)?;
        s.copy(
            (&self.ids).into(),
            Slot::from_readback(&self.readback),
            (4 * b) as u64,
        );
        Ok(s)
    }

    /// Batch rows B.
    pub fn rows(&self) -> usize {
        self.b
    }

    /// Positions each row can hold (maxT).
    pub fn context(&self) -> usize {
        self.max_t
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.cfg
    }

    /// Positions row `row` has filled so far.
    pub fn position(&self, row: usize) -> usize {
        self.pos[row]
    }

    /// Forget row `row`'s tokens: its next feed starts at position 0.
    pub fn reset(&mut self, row: usize) {
        self.pos[row] = 0;
    }

    /// Let row `row`'s next feed start at `pos`, as if `pos` positions had been fed
    /// (their cache rows hold whatever they hold). For benchmarks of decoding deep into
    /// the context without a prefill of that length first.
    pub fn set_position(&mut self, row: usize, pos: usize) -> Result<()> {
        if pos >= self.max_t {
            return Err(Error::Invalid(format!(
                "position {pos} is outside the context of {} positions",
                self.max_t
            )));
        }
        self.pos[row] = pos;
        Ok(())
    }

    /// Bytes the decoder holds on the device (cache, activations, logits), weights aside.
    pub fn bytes(&self) -> u64 {
        let acts: u64 = self.acts.all().iter().map(|t| t.size_bytes()).sum();
        self.cache.bytes() + acts + self.logits.size_bytes()
    }

    /// Launches of the pass a feed of `n` tokens per row replays.
    pub fn launches(&self, n: usize) -> usize {
        self.schedule(n).map_or(0, |s| s.launches())
    }

    /// The recorded pass a feed of `n` tokens per row replays (to profile it with
    /// `gpu::Profiler`; replaying it directly skips the state a feed writes).
    pub fn schedule(&self, n: usize) -> Option<&Schedule> {
        self.bucket(n).map(|i| &self.passes[i].1)
    }

    /// The pass a prompt's prefill of `n` tokens per row replays (every row from
    /// position 0).
    pub fn prefill_schedule(&self, n: usize) -> Option<&Schedule> {
        self.bucket(n)
            .map(|i| self.passes[i].2.as_ref().unwrap_or(&self.passes[i].1))
    }

    fn bucket(&self, n: usize) -> Option<usize> {
        self.passes.iter().position(|(t, _, _)| *t >= n)
    }

    /// Feed `tokens[r]` to row r at its current position (rows with no tokens sit the
    /// pass out), then draw one token per row with `settings[r]`: a prefill when a row
    /// gets its prompt, a decode step when it gets its last sampled token. One submit;
    /// only the B ids are read back (an idle row's id is meaningless).
    pub async fn feed(
        &mut self,
        ctx: &GpuContext,
        tokens: &[&[i32]],
        settings: &[SampleSettings],
    ) -> Result<Vec<u32>> {
        let (b, v) = (self.b, self.cfg.vocab_size);
        if tokens.len() != b || settings.len() != b {
            return Err(Error::Invalid(format!(
                "a feed takes tokens and settings for each of the decoder's {b} rows, got {} \
                 and {}",
                tokens.len(),
                settings.len()
            )));
        }
        let n = tokens.iter().map(|t| t.len()).max().unwrap_or(0);
        if n == 0 {
            return Err(Error::Invalid("a feed needs at least one token".into()));
        }
        for (r, toks) in tokens.iter().enumerate() {
            if self.pos[r] + toks.len() > self.max_t {
                return Err(Error::Invalid(format!(
                    "row {r}: {} positions filled + {} new tokens exceed the context of {} \
                     positions",
                    self.pos[r],
                    toks.len(),
                    self.max_t
                )));
            }
            if let Some(&bad) = toks.iter().find(|&&x| x < 0 || x as usize >= v) {
                return Err(Error::Invalid(format!(
                    "token id {bad} is outside the vocabulary of {v}"
                )));
            }
        }
        let i = self.bucket(n).expect("the last bucket holds maxT");
        let t = self.passes[i].0;
        let mut flat = vec![0i32; b * t];
        let mut rows = Vec::with_capacity(b);
        for (r, toks) in tokens.iter().enumerate() {
            flat[r * t..r * t + toks.len()].copy_from_slice(toks);
            rows.push(DecodeRow {
                pos: self.pos[r] as u32,
                n: toks.len() as u32,
            });
        }
        ctx.queue
            .write_buffer(&self.acts.tokens.buffer, 0, bytemuck::cast_slice(&flat));
        DecodeRow::write(ctx, &self.state, &rows)?;
        SampleSettings::write(ctx, &self.settings, settings)?;
        // Every row that takes tokens starts at 0: the prefill twin, whose attention
        // needs no cache (rows sitting the pass out append nothing either way).
        let fresh = tokens
            .iter()
            .enumerate()
            .all(|(r, toks)| toks.is_empty() || self.pos[r] == 0);
        match (&self.passes[i].2, fresh) {
            (Some(pass), true) => pass.run(ctx),
            _ => self.passes[i].1.run(ctx),
        };
        for (r, toks) in tokens.iter().enumerate() {
            self.pos[r] += toks.len();
        }
        self.readback.read::<u32>(ctx).await
    }

    /// The logits (B, V) of each row's last position fed (for tests and tools; a
    /// separate submit and a V-wide read, never part of generation).
    pub async fn logits(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        self.logits.read_f32(ctx).await
    }
}

/// Greedy continuation of `prompt` up to `total` tokens (prompt included) through the KV
/// cache: one prefill, then one decode step per token, each reading back only the
/// chosen id. The cached twin of `model::gpt2::generate_greedy` (full recomputation).
pub async fn generate_greedy_cached(
    ctx: &GpuContext,
    model: &Gpt2,
    prompt: &[i32],
    total: usize,
) -> Result<Vec<i32>> {
    let n = model.config.n_positions;
    if prompt.is_empty() || total > n {
        return Err(Error::Invalid(format!(
            "greedy decoding needs a prompt and at most {n} tokens in all, got a prompt of {} \
             for {total}",
            prompt.len()
        )));
    }
    let mut tokens = prompt.to_vec();
    if tokens.len() >= total {
        return Ok(tokens);
    }
    let mut dec = Decoder::new(ctx, model, 1, total - 1)?;
    let greedy = [SampleSettings::greedy()];
    let mut feed = prompt.to_vec();
    while tokens.len() < total {
        let ids = dec.feed(ctx, &[&feed], &greedy).await?;
        tokens.push(ids[0] as i32);
        feed = vec![ids[0] as i32];
    }
    Ok(tokens)
}
