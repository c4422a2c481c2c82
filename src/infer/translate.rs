//! Decoding with the encoder–decoder: greedy and beam search over a KV cache.
//!
//! For a batch of B sources padded to S, the encoder runs once (B rows). Its output is
//! copied to the K beam rows of each source (N = B·K decoder rows), and every decoder
//! block projects the cross-attention keys and values of that memory once. Each step
//! then feeds one token per row: the block's self-attention keys and values are
//! appended to its cache (`decode_append`) and its query attends over the cache
//! (`decode_attention`); cross-attention reuses the projected memory (`mha_forward`, one
//! query, source padding masked). A step is one submit and reads back the N rows of
//! logits; the host keeps the beams, and reorders the caches' rows by buffer copies when
//! a beam continues another's hypothesis. All rows of a step sit at the same position,
//! so the positional row is copied into place once per step.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Readback, Schedule, Tensor};
use crate::kernels::decode::{decode_append, decode_attention, DecodeRow};
use crate::kernels::encoder::embed_forward;
use crate::kernels::layernorm::layernorm_forward;
use crate::kernels::matmul::{classifier_forward, matmul_forward};
use crate::kernels::mha::{mha_forward, MhaLayout};
use crate::model::blocks::{add_norm_forward, ffn_forward, Activation};
use crate::model::seq2seq::graph::{record_encoder, Seq2seqActs};
use crate::model::seq2seq::Seq2seq;

/// How to decode.
#[derive(Clone, Debug, PartialEq)]
pub struct TranslateOptions {
    /// Beams per source; 1 is greedy.
    pub beam: usize,
    /// Most target tokens to produce (EOS included).
    pub max_len: usize,
    /// α of the length normalisation score / len^α that ranks finished beams (0: none).
    pub length_penalty: f32,
    /// Stop a hypothesis at EOS (else produce exactly `max_len` tokens; greedy only).
    pub stop_at_eos: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            beam: 1,
            max_len: 64,
            length_penalty: 1.0,
            stop_at_eos: true,
        }
    }
}

/// One decoded target.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Target ids, without BOS, and without the EOS that ended it.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities (EOS included when it ended the hypothesis).
    pub log_prob: f32,
    /// Whether it ended with EOS (rather than at max_len).
    pub finished: bool,
}

/// Per-step tensors of the decoder at N rows.
struct StepActs {
    tokens: Tensor,       // (N) i32: this step's input token per row
    pe_step: Tensor,      // (1, C): the positional row of this step
    state: Tensor,        // (N, 2) u32: a DecodeRow per row
    memory: Tensor,       // (N, S, C): the encoder output of each row's source
    src_pad: Tensor,      // (N, S) i32
    k_cache: Vec<Tensor>, // per block (N, NH, maxT, HS)
    v_cache: Vec<Tensor>, // per block (N, NH, maxT, HS)
    scratch: Tensor,      // (N, NH, maxT, HS): reordering beams
    acts: Seq2seqActs,    // at (N, S, 1): one query per row
    logits_rb: Readback,
}

/// A decoder for `b` sources of at most `s` tokens, `beam` rows each, `max_t` steps.
pub struct Translator<'m> {
    model: &'m Seq2seq,
    b: usize,
    s: usize,
    k: usize,
    max_t: usize,
    enc: Seq2seqActs, // at (B, S, 1): the encoder's activations
    step: StepActs,
    encode: Schedule,
    cross: Schedule,
    decode: Schedule,
}

impl<'m> Translator<'m> {
    pub fn new(
        ctx: &GpuContext,
        model: &'m Seq2seq,
        b: usize,
        s: usize,
        beam: usize,
        max_t: usize,
    ) -> Result<Self> {
        let cfg = &model.config;
        if beam == 0 {
            return Err(Error::Invalid("--beam must be at least 1".into()));
        }
        if max_t == 0 || max_t > cfg.max_len {
            return Err(Error::Invalid(format!(
                "--max-len {max_t}: the model's positional table covers 1..={} target tokens",
                cfg.max_len
            )));
        }
        let (c, nh, v) = (cfg.d_model, cfg.heads, cfg.tgt_vocab);
        let n = b * beam;
        let enc = Seq2seqActs::new(ctx, cfg, b, s, 1, "enc.")?;
        let acts = Seq2seqActs::new(ctx, cfg, n, s, 1, "dec.")?;
        let cache = |kind: &str, l: usize| {
            Tensor::zeros(
                ctx,
                &format!("{kind}_cache.{l}"),
                &[n, nh, max_t, c / nh],
                DType::F32,
            )
        };
        let step = StepActs {
            tokens: Tensor::zeros(ctx, "step tokens", &[n], DType::I32)?,
            pe_step: Tensor::zeros(ctx, "step position", &[1, c], DType::F32)?,
            state: DecodeRow::tensor(ctx, "decode state", n)?,
            memory: Tensor::zeros(ctx, "beam memory", &[n, s, c], DType::F32)?,
            src_pad: Tensor::zeros(ctx, "beam src_pad", &[n, s], DType::I32)?,
            k_cache: (0..cfg.decoder_layers)
                .map(|l| cache("k", l))
                .collect::<Result<_>>()?,
            v_cache: (0..cfg.decoder_layers)
                .map(|l| cache("v", l))
                .collect::<Result<_>>()?,
            scratch: Tensor::zeros(ctx, "cache scratch", &[n, nh, max_t, c / nh], DType::F32)?,
            acts,
            logits_rb: Readback::new(ctx, "step logits", (n * v * 4) as u64),
        };
        let mut encode = Schedule::new("translate encoder");
        record_encoder(&mut encode, ctx, model, &enc)?;
        let mut cross = Schedule::new("translate cross kv");
        for (w, l) in model.params.dec.iter().zip(&step.acts.dec) {
            matmul_forward(
                &mut cross,
                ctx,
                &l.ckv,
                &step.memory,
                &w.ca.kv_w,
                Some(&w.ca.kv_b),
                n * s,
                c,
                2 * c,
            )?;
        }
        let mut decode = Schedule::new("translate step");
        record_step(&mut decode, ctx, model, &step, n, s, max_t)?;
        Ok(Translator {
            model,
            b,
            s,
            k: beam,
            max_t,
            enc,
            step,
            encode,
            cross,
            decode,
        })
    }

    /// Decode `sources` (at most B, each at most S ids, no specials).
    pub async fn run(
        &self,
        ctx: &GpuContext,
        sources: &[Vec<u32>],
        opts: &TranslateOptions,
    ) -> Result<Vec<Hypothesis>> {
        let cfg = &self.model.config;
        let (b, s, k, n) = (self.b, self.s, self.k, self.b * self.k);
        if sources.is_empty() || sources.len() > b {
            return Err(Error::Invalid(format!(
                "{} sources for a translator of {b}",
                sources.len()
            )));
        }
        if opts.max_len > self.max_t {
            return Err(Error::Invalid(format!(
                "max_len {} exceeds the translator's {}",
                opts.max_len, self.max_t
            )));
        }
        let mut src = vec![cfg.pad_id as i32; b * s];
        let mut pad = vec![1i32; b * s];
        for (i, row) in sources.iter().enumerate() {
            if row.len() > s {
                return Err(Error::Invalid(format!(
                    "source {} has {} tokens, more than {s}",
                    i + 1,
                    row.len()
                )));
            }
            if let Some(&bad) = row.iter().find(|&&t| t as usize >= cfg.src_vocab) {
                return Err(Error::Invalid(format!(
                    "source {}: id {bad} outside the source vocabulary of {}",
                    i + 1,
                    cfg.src_vocab
                )));
            }
            for (j, &t) in row.iter().enumerate() {
                src[i * s + j] = t as i32;
                pad[i * s + j] = 0;
            }
        }
        // Rows past the sources given are all padding; let them see their first key so
        // the attention stays finite (their results are discarded).
        for i in sources.len()..b {
            pad[i * s] = 0;
        }
        self.enc.src.write(ctx, &src)?;
        self.enc.src_pad.write(ctx, &pad)?;
        let beam_pad: Vec<i32> = (0..n)
            .flat_map(|r| pad[(r / k) * s..(r / k + 1) * s].to_vec())
            .collect();
        self.step.src_pad.write(ctx, &beam_pad)?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("translate encode"),
            });
        self.encode.encode(&mut enc);
        let row = (s * cfg.d_model * 4) as u64;
        for r in 0..n as u64 {
            let from = r / k as u64;
            enc.copy_buffer_to_buffer(
                &self.enc.memory.buffer,
                from * row,
                &self.step.memory.buffer,
                r * row,
                row,
            );
        }
        self.cross.encode(&mut enc);
        ctx.submit(enc.finish());

        let v = cfg.tgt_vocab;
        let live = sources.len();
        // Per source: the beams' tokens and scores; beam 0 starts alone.
        let mut beams: Vec<Vec<(Vec<u32>, f32)>> = (0..live)
            .map(|_| {
                (0..k)
                    .map(|j| (Vec::new(), if j == 0 { 0.0 } else { f32::NEG_INFINITY }))
                    .collect()
            })
            .collect();
        let mut done: Vec<Vec<Hypothesis>> = vec![Vec::new(); live];
        let mut closed = vec![false; live];
        let mut inputs = vec![cfg.bos_id as i32; n];
        // Cache rows to reorder before the next step, when beams changed parents.
        let mut pending: Option<Vec<usize>> = None;
        let alpha = opts.length_penalty;
        let norm = |h: &Hypothesis| {
            let len = (h.tokens.len() + h.finished as usize).max(1) as f32;
            h.log_prob / len.powf(alpha)
        };
        for pos in 0..opts.max_len {
            let logits = self.forward_step(ctx, &inputs, pos, pending.take()).await?;
            let mut parents: Vec<usize> = (0..n).collect();
            for g in 0..live {
                if closed[g] {
                    continue;
                }
                // Candidates (score, beam, token) of this source.
                let mut cand: Vec<(f32, usize, u32)> = Vec::new();
                for (j, (_, score)) in beams[g].iter().enumerate() {
                    if !score.is_finite() {
                        continue;
                    }
                    let row = &logits[(g * k + j) * v..(g * k + j + 1) * v];
                    if k == 1 {
                        // Greedy: the first maximum, as torch.argmax.
                        let (best, _) =
                            row.iter()
                                .enumerate()
                                .fold(
                                    (0, f32::NEG_INFINITY),
                                    |m, (i, &x)| if x > m.1 { (i, x) } else { m },
                                );
                        let lse = log_sum_exp(row);
                        cand.push((score + row[best] - lse, j, best as u32));
                        continue;
                    }
                    let lse = log_sum_exp(row);
                    let mut top: Vec<(f32, u32)> = row
                        .iter()
                        .enumerate()
                        .map(|(i, &x)| (x - lse, i as u32))
                        .collect();
                    top.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    cand.extend(
                        top.into_iter()
                            .take(2 * k)
                            .map(|(lp, t)| (score + lp, j, t)),
                    );
                }
                cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                let mut next: Vec<(Vec<u32>, f32)> = Vec::new();
                let mut from: Vec<usize> = Vec::new();
                for (score, j, t) in cand {
                    if next.len() == k {
                        break;
                    }
                    let mut toks = beams[g][j].0.clone();
                    if opts.stop_at_eos && t == cfg.eos_id {
                        done[g].push(Hypothesis {
                            tokens: toks,
                            log_prob: score,
                            finished: true,
                        });
                        continue;
                    }
                    toks.push(t);
                    next.push((toks, score));
                    from.push(j);
                }
                // Stop when K hypotheses are finished and none alive can beat the best of
                // them, or when nothing is alive.
                let best_done = done[g].iter().map(norm).fold(f32::NEG_INFINITY, f32::max);
                let best_live = next
                    .iter()
                    .map(|(t, sc)| sc / (t.len().max(1) as f32).powf(alpha))
                    .fold(f32::NEG_INFINITY, f32::max);
                if next.is_empty() || (done[g].len() >= k && best_done >= best_live) {
                    // Finished: only the ended hypotheses compete (the live beams of the
                    // previous step are prefixes of them or worse).
                    closed[g] = true;
                    beams[g].clear();
                    continue;
                }
                while next.len() < k {
                    next.push((Vec::new(), f32::NEG_INFINITY));
                    from.push(0);
                }
                for (j, (toks, _)) in next.iter().enumerate() {
                    parents[g * k + j] = g * k + from[j];
                    inputs[g * k + j] = toks.last().map_or(cfg.pad_id as i32, |&t| t as i32);
                }
                beams[g] = next;
            }
            if closed.iter().all(|&c| c) {
                break;
            }
            if parents.iter().enumerate().any(|(i, &p)| i != p) {
                pending = Some(parents);
            }
        }
        Ok((0..live)
            .map(|g| {
                let mut all = std::mem::take(&mut done[g]);
                all.extend(
                    beams[g]
                        .iter()
                        .filter(|(_, s)| s.is_finite())
                        .map(|(t, s)| Hypothesis {
                            tokens: t.clone(),
                            log_prob: *s,
                            finished: false,
                        }),
                );
                all.into_iter()
                    .max_by(|a, b| norm(a).total_cmp(&norm(b)))
                    .unwrap_or(Hypothesis {
                        tokens: Vec::new(),
                        log_prob: 0.0,
                        finished: false,
                    })
            })
            .collect())
    }

    /// One decoder step at position `pos` for the N input tokens, after the caches' rows
    /// are reordered to `parents` if given: returns logits (N, V). One submit.
    async fn forward_step(
        &self,
        ctx: &GpuContext,
        inputs: &[i32],
        pos: usize,
        parents: Option<Vec<usize>>,
    ) -> Result<Vec<f32>> {
        let n = inputs.len();
        let c = self.model.config.d_model;
        self.step.tokens.write(ctx, inputs)?;
        DecodeRow::write(
            ctx,
            &self.step.state,
            &vec![
                DecodeRow {
                    pos: pos as u32,
                    n: 1
                };
                n
            ],
        )?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("translate step"),
            });
        if let Some(parents) = parents {
            self.encode_reorder(&mut enc, &parents, pos);
        }
        let row = (c * 4) as u64;
        enc.copy_buffer_to_buffer(
            &self.model.pe.buffer,
            pos as u64 * row,
            &self.step.pe_step.buffer,
            0,
            row,
        );
        self.decode.encode(&mut enc);
        let rb = &self.step.logits_rb;
        enc.copy_buffer_to_buffer(&self.step.acts.logits.buffer, 0, &rb.buffer, 0, rb.size);
        ctx.submit(enc.finish());
        rb.read(ctx).await
    }

    /// Row i of every cache takes row parents[i]'s first `len` positions.
    fn encode_reorder(&self, enc: &mut wgpu::CommandEncoder, parents: &[usize], len: usize) {
        let cfg = &self.model.config;
        let (nh, hs) = (cfg.heads, cfg.head_size());
        let head = (self.max_t * hs * 4) as u64;
        let used = (len.min(self.max_t) * hs * 4) as u64;
        for cache in self.step.k_cache.iter().chain(&self.step.v_cache) {
            enc.copy_buffer_to_buffer(
                &cache.buffer,
                0,
                &self.step.scratch.buffer,
                0,
                cache.size_bytes(),
            );
            for (i, &p) in parents.iter().enumerate() {
                if i == p {
                    continue;
                }
                for h in 0..nh as u64 {
                    let (src, dst) = (
                        (p as u64 * nh as u64 + h) * head,
                        (i as u64 * nh as u64 + h) * head,
                    );
                    enc.copy_buffer_to_buffer(
                        &self.step.scratch.buffer,
                        src,
                        &cache.buffer,
                        dst,
                        used,
                    );
                }
            }
        }
    }
}

fn log_sum_exp(row: &[f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f64 = row.iter().map(|&x| ((x - m) as f64).exp()).sum();
    m + s.ln() as f32
}

/// Record one decoder step over N rows: embed the step's tokens, then per block
/// self-attention over the cache, cross-attention over the memory, feed-forward.
fn record_step(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    st: &StepActs,
    n: usize,
    sl: usize,
    max_t: usize,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (c, nh, f, v) = (cfg.d_model, cfg.heads, cfg.ffn, cfg.tgt_vocab);
    let eps = cfg.layer_norm_eps as f32;
    let a = &st.acts;
    embed_forward(
        s,
        ctx,
        &a.tgt_x,
        &st.tokens,
        &p.tgt_emb,
        &st.pe_step,
        n,
        1,
        c,
        v,
        (c as f32).sqrt(),
    )?;
    let mut x = &a.tgt_x;
    for (l, (w, d)) in p.dec.iter().zip(&a.dec).enumerate() {
        let (kc, vc) = (&st.k_cache[l], &st.v_cache[l]);
        matmul_forward(
            s,
            ctx,
            &d.qkv,
            x,
            &w.sa.qkv_w,
            Some(&w.sa.qkv_b),
            n,
            c,
            3 * c,
        )?;
        decode_append(s, ctx, kc, vc, &d.qkv, &st.state, n, 1, c, nh, max_t)?;
        decode_attention(s, ctx, &d.sa, &d.qkv, kc, vc, &st.state, n, 1, c, nh, max_t)?;
        matmul_forward(
            s,
            ctx,
            &d.saproj,
            &d.sa,
            &w.sa.out_w,
            Some(&w.sa.out_b),
            n,
            c,
            c,
        )?;
        add_norm_forward(
            s,
            ctx,
            (&d.res1, &d.x1, &d.x1_mean, &d.x1_rstd),
            x,
            &d.saproj,
            &w.norm1,
            (n, 1, c),
            eps,
        )?;
        matmul_forward(s, ctx, &d.cq, &d.x1, &w.ca.q_w, Some(&w.ca.q_b), n, c, c)?;
        let cross = MhaLayout::cross(c);
        mha_forward(
            s,
            ctx,
            &d.ca,
            &d.ca_stats,
            &d.cq,
            &d.ckv,
            Some(&st.src_pad),
            cross,
            n,
            1,
            sl,
            c,
            nh,
            false,
        )?;
        matmul_forward(
            s,
            ctx,
            &d.caproj,
            &d.ca,
            &w.ca.out_w,
            Some(&w.ca.out_b),
            n,
            c,
            c,
        )?;
        add_norm_forward(
            s,
            ctx,
            (&d.res2, &d.x2, &d.x2_mean, &d.x2_rstd),
            &d.x1,
            &d.caproj,
            &w.norm2,
            (n, 1, c),
            eps,
        )?;
        ffn_forward(
            s,
            ctx,
            &w.ffn,
            (&d.ff1, &d.ff1_act, &d.ff2),
            &d.x2,
            (n, c, f),
            Activation::Relu,
        )?;
        add_norm_forward(
            s,
            ctx,
            (&d.res3, &d.x3, &d.x3_mean, &d.x3_rstd),
            &d.x2,
            &d.ff2,
            &w.norm3,
            (n, 1, c),
            eps,
        )?;
        x = &d.x3;
    }
    let nrm = &p.dec_norm;
    layernorm_forward(
        s, ctx, &a.y, &a.y_mean, &a.y_rstd, x, &nrm.w, &nrm.b, n, 1, c, eps,
    )?;
    classifier_forward(s, ctx, &a.logits, &a.y, &p.tgt_emb, n, c, v)
}

/// Decode `sources` in batches of up to `batch`, each padded to its batch's longest.
pub async fn translate(
    ctx: &GpuContext,
    model: &Seq2seq,
    sources: &[Vec<u32>],
    opts: &TranslateOptions,
    batch: usize,
) -> Result<Vec<Hypothesis>> {
    let mut out = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(batch.max(1)) {
        let s = chunk.iter().map(Vec::len).max().unwrap_or(1).max(1);
        if s > model.config.max_len {
            return Err(Error::Invalid(format!(
                "a source of {s} tokens exceeds the model's max_len of {}",
                model.config.max_len
            )));
        }
        let tr = Translator::new(ctx, model, chunk.len(), s, opts.beam, opts.max_len)?;
        out.extend(tr.run(ctx, chunk, opts).await?);
    }
    Ok(out)
}
