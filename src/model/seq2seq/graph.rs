//! The encoder–decoder's activations at fixed (B, S, T) and its passes, recorded into a
//! schedule: forward (source → memory → logits), loss, and backward, which walks the
//! forward in reverse line for line. Every op is a GPT-2 kernel or an `mha` one; what is
//! new is the order: post-LN blocks (x = norm(x + sublayer(x))), ReLU feed-forward,
//! sinusoidal positions, and cross-attention whose keys and values every decoder block
//! projects from the one encoder output. Gradients are added into, so the caller zeroes
//! the gradient activations and the parameter gradients before each backward pass (and
//! the backward zeroes each block's again before the block: the blocks share one set).

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Schedule, Tensor};
use crate::kernels::classifier::{
    classifier_crossentropy_backward, classifier_crossentropy_forward,
    classifier_crossentropy_loss, ClassifierChunk, ClassifierChunks,
};
use crate::kernels::crossentropy::{
    crossentropy_backward_inplace, crossentropy_forward, crossentropy_mean, STATS_LEN,
};
use crate::kernels::dropout::{drop_in_place, undrop_in_place, Dropout};
use crate::kernels::encoder::{embed_backward, embed_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::kernels::matmul::{
    classifier_backward, classifier_forward, matmul_backward, matmul_forward,
};
use crate::kernels::mha::{mha_backward, mha_forward, MhaLayout};
use crate::model::blocks::{
    add_norm_backward, add_norm_forward, encoder_layer_backward, encoder_layer_forward,
    ffn_backward, ffn_forward, self_attn_backward, self_attn_forward, shared_block_grads,
    unique_tensors, zero_block_grads, Activation, EncoderLayerActs, GradTwin,
};
use crate::model::seq2seq::params::Seq2seqTensors;
use crate::model::seq2seq::{Seq2seq, Seq2seqConfig};

/// One decoder block's activations at (B, T) (cross-attention's kv at (B, S)).
#[derive(Clone)]
pub struct DecoderLayerActs {
    pub qkv: Tensor,      // (B, T, 3C)
    pub sa: Tensor,       // (B, T, C)
    pub sa_stats: Tensor, // (B, NH, T)
    pub saproj: Tensor,   // (B, T, C)
    pub res1: Tensor,     // (B, T, C): x + saproj
    pub x1: Tensor,       // (B, T, C): norm1(res1)
    pub x1_mean: Tensor,  // (B, T)
    pub x1_rstd: Tensor,  // (B, T)
    pub cq: Tensor,       // (B, T, C): cross-attention queries
    pub ckv: Tensor,      // (B, S, 2C): cross-attention keys and values of the memory
    pub ca: Tensor,       // (B, T, C)
    pub ca_stats: Tensor, // (B, NH, T)
    pub caproj: Tensor,   // (B, T, C)
    pub res2: Tensor,     // (B, T, C): x1 + caproj
    pub x2: Tensor,       // (B, T, C): norm2(res2)
    pub x2_mean: Tensor,  // (B, T)
    pub x2_rstd: Tensor,  // (B, T)
    pub ff1: Tensor,      // (B, T, F)
    pub ff1_act: Tensor,  // (B, T, F)
    pub ff2: Tensor,      // (B, T, C)
    pub res3: Tensor,     // (B, T, C): x2 + ff2
    pub x3: Tensor,       // (B, T, C): norm3(res3), the block's output
    pub x3_mean: Tensor,  // (B, T)
    pub x3_rstd: Tensor,  // (B, T)
}

impl DecoderLayerActs {
    /// Zeroed activations of one block labelled `<prefix><name>`, at (B, S, T), width C,
    /// NH heads, feed-forward width F.
    fn new(
        ctx: &GpuContext,
        prefix: &str,
        (b, s, t, c, nh, f): (usize, usize, usize, usize, usize, usize),
    ) -> Result<Self> {
        let z = |n: &str, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{n}"), shape, DType::F32)
        };
        let (btc, bt, bht) = ([b, t, c], [b, t], [b, nh, t]);
        Ok(DecoderLayerActs {
            qkv: z("qkv", &[b, t, 3 * c])?,
            sa: z("sa", &btc)?,
            sa_stats: z("sa_stats", &bht)?,
            saproj: z("saproj", &btc)?,
            res1: z("res1", &btc)?,
            x1: z("x1", &btc)?,
            x1_mean: z("x1_mean", &bt)?,
            x1_rstd: z("x1_rstd", &bt)?,
            cq: z("cq", &btc)?,
            ckv: z("ckv", &[b, s, 2 * c])?,
            ca: z("ca", &btc)?,
            ca_stats: z("ca_stats", &bht)?,
            caproj: z("caproj", &btc)?,
            res2: z("res2", &btc)?,
            x2: z("x2", &btc)?,
            x2_mean: z("x2_mean", &bt)?,
            x2_rstd: z("x2_rstd", &bt)?,
            ff1: z("ff1", &[b, t, f])?,
            ff1_act: z("ff1_act", &[b, t, f])?,
            ff2: z("ff2", &btc)?,
            res3: z("res3", &btc)?,
            x3: z("x3", &btc)?,
            x3_mean: z("x3_mean", &bt)?,
            x3_rstd: z("x3_rstd", &bt)?,
        })
    }

    pub fn all(&self) -> [&Tensor; 24] {
        [
            &self.qkv,
            &self.sa,
            &self.sa_stats,
            &self.saproj,
            &self.res1,
            &self.x1,
            &self.x1_mean,
            &self.x1_rstd,
            &self.cq,
            &self.ckv,
            &self.ca,
            &self.ca_stats,
            &self.caproj,
            &self.res2,
            &self.x2,
            &self.x2_mean,
            &self.x2_rstd,
            &self.ff1,
            &self.ff1_act,
            &self.ff2,
            &self.res3,
            &self.x3,
            &self.x3_mean,
            &self.x3_rstd,
        ]
    }
}

impl GradTwin for DecoderLayerActs {
    fn accumulated(&self) -> Vec<&Tensor> {
        vec![
            &self.qkv,
            &self.sa,
            &self.saproj,
            &self.res1,
            &self.x1,
            &self.cq,
            &self.ckv,
            &self.ca,
            &self.caproj,
            &self.res2,
            &self.x2,
            &self.ff1,
            &self.ff1_act,
            &self.ff2,
            &self.res3,
            &self.x3,
        ]
    }
    fn output(&self) -> &Tensor {
        &self.x3
    }
    fn output_mut(&mut self) -> &mut Tensor {
        &mut self.x3
    }
}

/// Every activation of a forward pass at (B, S, T), allocated once. The same struct
/// holds the gradients of the activations ([`Seq2seqActs::gradients`]: inputs, means,
/// rstds, stats and loss unused).
pub struct Seq2seqActs {
    pub b: usize,
    pub s: usize,
    pub t: usize,
    pub src: Tensor,     // (B, S) i32
    pub src_pad: Tensor, // (B, S) i32: nonzero = padding, hidden from attention
    pub tgt_in: Tensor,  // (B, T) i32: BOS then the target
    pub tgt_out: Tensor, // (B, T) i32: the target then EOS; -100 = not counted
    pub src_x: Tensor,   // (B, S, C): embedded source
    pub enc: Vec<EncoderLayerActs>,
    pub memory: Tensor,   // (B, S, C): the encoder's output, after its final norm
    pub mem_mean: Tensor, // (B, S)
    pub mem_rstd: Tensor, // (B, S)
    pub tgt_x: Tensor,    // (B, T, C): embedded target input
    pub dec: Vec<DecoderLayerActs>,
    pub y: Tensor,      // (B, T, C): the decoder's output, after its final norm
    pub y_mean: Tensor, // (B, T)
    pub y_rstd: Tensor, // (B, T)
    /// (B, T, Vt), or (B, T, Vc) with `classifier`: one chunk of target-vocabulary
    /// columns at a time; the backward pass overwrites it with dlogits. (1) in
    /// gradients, which never read it.
    pub logits: Tensor,
    pub losses: Tensor,     // (B, T)
    pub loss_stats: Tensor, // (4): [mean, count, 1/count, sum]
    /// The tied output projection fused with the loss over chunks of Vc columns
    /// (`kernels::classifier`); `None`: whole logits, and in gradients.
    pub classifier: Option<ClassifierChunks>,
}

impl Seq2seqActs {
    /// Activations with whole logits (inference, which reads them).
    pub fn new(
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        b: usize,
        s: usize,
        t: usize,
        prefix: &str,
    ) -> Result<Self> {
        Self::with_classifier(ctx, cfg, b, s, t, prefix, ClassifierChunk::Whole)
    }

    /// Activations whose logits are whole or vocabulary chunks as `chunk` decides
    /// (training: the loss needs only each row's stats, see `kernels::classifier`).
    pub fn with_classifier(
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        b: usize,
        s: usize,
        t: usize,
        prefix: &str,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        Self::build(ctx, cfg, (b, s, t), prefix, chunk, false)
    }

    /// The gradients of [`with_classifier`](Self::with_classifier)'s activations, labelled
    /// `grad.`: the encoder's blocks share one set and the decoder's another
    /// ([`shared_block_grads`]), which [`record_backward`] zeroes before each block. The
    /// logits, which the backward never reads (the activations' own hold dlogits), are
    /// one float and have no chunk scratch.
    pub fn gradients(
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        (b, s, t): (usize, usize, usize),
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        Self::build(ctx, cfg, (b, s, t), "grad.", chunk, true)
    }

    fn build(
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        (b, s, t): (usize, usize, usize),
        prefix: &str,
        chunk: ClassifierChunk,
        gradients: bool,
    ) -> Result<Self> {
        if b == 0 || s == 0 || t == 0 {
            return Err(Error::Invalid(format!(
                "batch {b}, source length {s}, target length {t}: all must be positive"
            )));
        }
        if s > cfg.max_len || t > cfg.max_len {
            return Err(Error::Invalid(format!(
                "source length {s} or target length {t} exceeds the model's max_len of {}",
                cfg.max_len
            )));
        }
        let (c, nh, f) = (cfg.d_model, cfg.heads, cfg.ffn);
        let f32t = |name: String, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{name}"), shape, DType::F32)
        };
        let i32t = |name: &str, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{name}"), shape, DType::I32)
        };
        let vc = chunk.columns(b * t, cfg.tgt_vocab)?;
        let logits_shape = match vc {
            _ if gradients => vec![1],
            Some(vc) => vec![b, t, vc],
            None => vec![b, t, cfg.tgt_vocab],
        };
        let (enc, dec) = if gradients {
            let enc = EncoderLayerActs::new(ctx, &format!("{prefix}enc."), (b, s, c, nh, f))?;
            let dec = DecoderLayerActs::new(ctx, &format!("{prefix}dec."), (b, s, t, c, nh, f))?;
            (
                shared_block_grads(
                    enc,
                    f32t("enc.odd.x2".into(), &[b, s, c])?,
                    cfg.encoder_layers,
                ),
                shared_block_grads(
                    dec,
                    f32t("dec.odd.x3".into(), &[b, t, c])?,
                    cfg.decoder_layers,
                ),
            )
        } else {
            let enc = (0..cfg.encoder_layers)
                .map(|l| EncoderLayerActs::new(ctx, &format!("{prefix}enc.{l}."), (b, s, c, nh, f)))
                .collect::<Result<Vec<_>>>()?;
            let dec = (0..cfg.decoder_layers)
                .map(|l| {
                    DecoderLayerActs::new(ctx, &format!("{prefix}dec.{l}."), (b, s, t, c, nh, f))
                })
                .collect::<Result<Vec<_>>>()?;
            (enc, dec)
        };
        Ok(Seq2seqActs {
            b,
            s,
            t,
            src: i32t("src", &[b, s])?,
            src_pad: i32t("src_pad", &[b, s])?,
            tgt_in: i32t("tgt_in", &[b, t])?,
            tgt_out: i32t("tgt_out", &[b, t])?,
            src_x: f32t("src_x".into(), &[b, s, c])?,
            enc,
            memory: f32t("memory".into(), &[b, s, c])?,
            mem_mean: f32t("mem_mean".into(), &[b, s])?,
            mem_rstd: f32t("mem_rstd".into(), &[b, s])?,
            tgt_x: f32t("tgt_x".into(), &[b, t, c])?,
            dec,
            y: f32t("y".into(), &[b, t, c])?,
            y_mean: f32t("y_mean".into(), &[b, t])?,
            y_rstd: f32t("y_rstd".into(), &[b, t])?,
            logits: f32t("logits".into(), &logits_shape)?,
            losses: f32t("losses".into(), &[b, t])?,
            loss_stats: f32t("loss_stats".into(), &[STATS_LEN])?,
            classifier: vc
                .filter(|_| !gradients)
                .map(|vc| ClassifierChunks::new(ctx, prefix, b * t, c, vc))
                .transpose()?,
        })
    }

    /// The float activations (what a backward pass's gradient copy must zero).
    pub fn floats(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.src_x];
        for l in &self.enc {
            v.extend(l.all());
        }
        v.extend([&self.memory, &self.mem_mean, &self.mem_rstd, &self.tgt_x]);
        for l in &self.dec {
            v.extend(l.all());
        }
        v.extend([
            &self.y,
            &self.y_mean,
            &self.y_rstd,
            &self.logits,
            &self.losses,
            &self.loss_stats,
        ]);
        unique_tensors(v)
    }

    /// Every tensor (memory reports).
    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.src, &self.src_pad, &self.tgt_in, &self.tgt_out];
        v.extend(self.floats());
        v
    }

    /// Upload a batch: src and src_pad (B·S), tgt_in and tgt_out (B·T), checked.
    pub fn write_batch(
        &self,
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        src: &[i32],
        src_pad: &[i32],
        tgt_in: &[i32],
        tgt_out: &[i32],
    ) -> Result<()> {
        check_batch(
            cfg,
            src,
            src_pad,
            tgt_in,
            Some(tgt_out),
            1,
            self.b,
            self.s,
            self.t,
        )?;
        self.src.write(ctx, src)?;
        self.src_pad.write(ctx, src_pad)?;
        self.tgt_in.write(ctx, tgt_in)?;
        self.tgt_out.write(ctx, tgt_out)
    }
}

/// Error unless K micro-batches of (B, S) sources and (B, T) targets have the right
/// lengths and every id lies in its vocabulary (targets may also be -100).
#[allow(clippy::too_many_arguments)]
pub fn check_batch(
    cfg: &Seq2seqConfig,
    src: &[i32],
    src_pad: &[i32],
    tgt_in: &[i32],
    tgt_out: Option<&[i32]>,
    k: usize,
    b: usize,
    s: usize,
    t: usize,
) -> Result<()> {
    let lens = [
        ("src", src.len(), k * b * s),
        ("src_pad", src_pad.len(), k * b * s),
        ("tgt_in", tgt_in.len(), k * b * t),
        ("tgt_out", tgt_out.map_or(k * b * t, |y| y.len()), k * b * t),
    ];
    for (name, got, want) in lens {
        if got != want {
            return Err(Error::Invalid(format!(
                "{name}: {got} ids, expected {want} ({k} micro-batches of {b} rows)"
            )));
        }
    }
    let bad = |ids: &[i32], v: usize, ignore: bool| {
        ids.iter().position(|&i| {
            !((0..v as i32).contains(&i)
                || (ignore && i == crate::kernels::crossentropy::IGNORE_INDEX))
        })
    };
    for (name, ids, v, ignore) in [
        ("src", src, cfg.src_vocab, false),
        ("tgt_in", tgt_in, cfg.tgt_vocab, false),
        ("tgt_out", tgt_out.unwrap_or(&[]), cfg.tgt_vocab, true),
    ] {
        if let Some(i) = bad(ids, v, ignore) {
            return Err(Error::Invalid(format!(
                "{name}[{i}] = {} is outside the vocabulary [0, {v})",
                ids[i]
            )));
        }
    }
    Ok(())
}

/// Dropout sites (shaders/dropout.wgsl): the source embeddings 0, encoder block l's
/// attention and feed-forward outputs 1 + 2l and 2 + 2l; then, with E encoder blocks,
/// the target embeddings 1 + 2E and decoder block l's self-attention, cross-attention and
/// feed-forward outputs 2 + 2E + 3l + (0, 1, 2).
fn enc_sites(l: usize) -> [u32; 2] {
    [1 + 2 * l as u32, 2 + 2 * l as u32]
}

fn tgt_site(cfg: &Seq2seqConfig) -> u32 {
    1 + 2 * cfg.encoder_layers as u32
}

fn dec_sites(cfg: &Seq2seqConfig, l: usize) -> [u32; 3] {
    let base = 2 + 2 * cfg.encoder_layers as u32 + 3 * l as u32;
    [base, base + 1, base + 2]
}

/// Record the encoder: src → memory (B, S, C).
pub fn record_encoder(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
) -> Result<()> {
    record_encoder_dropout(s, ctx, model, a, None)
}

/// [`record_encoder`] with `dropout` (training): the embedded source (after its
/// positions are added) and each block's attention and feed-forward outputs before their
/// residual adds, in place, as torch.nn.Transformer's dropout1/dropout2 and the usual
/// positional-encoding dropout. Attention probabilities and the feed-forward's hidden
/// layer are not dropped.
fn record_encoder_dropout(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (b, sl, c, nh, f) = (a.b, a.s, cfg.d_model, cfg.heads, cfg.ffn);
    let eps = cfg.layer_norm_eps as f32;
    let scale = (c as f32).sqrt();
    embed_forward(
        s,
        ctx,
        &a.src_x,
        &a.src,
        &p.src_emb,
        &model.pe,
        b,
        sl,
        c,
        cfg.src_vocab,
        scale,
    )?;
    drop_in_place(s, ctx, dropout, &a.src_x, 0)?;
    let mut x = &a.src_x;
    for (i, (w, l)) in p.enc.iter().zip(&a.enc).enumerate() {
        let dims = (b, sl, c, nh, f);
        encoder_layer_forward(
            s,
            ctx,
            w,
            l,
            x,
            Some(&a.src_pad),
            dims,
            eps,
            Activation::Relu,
            (dropout, enc_sites(i)),
        )?;
        x = &l.x2;
    }
    let n = &p.enc_norm;
    layernorm_forward(
        s,
        ctx,
        &a.memory,
        &a.mem_mean,
        &a.mem_rstd,
        x,
        &n.w,
        &n.b,
        b,
        sl,
        c,
        eps,
    )
}

/// Record the decoder over the memory the encoder left in `a`: tgt_in → logits (B, T, Vt).
pub fn record_decoder(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
) -> Result<()> {
    record_decoder_dropout(s, ctx, model, a, None)
}

/// [`record_decoder`] with `dropout` (training): the embedded target and each block's
/// self-attention, cross-attention and feed-forward outputs, in place.
fn record_decoder_dropout(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (b, sl, t, c, nh, f) = (a.b, a.s, a.t, cfg.d_model, cfg.heads, cfg.ffn);
    let eps = cfg.layer_norm_eps as f32;
    let scale = (c as f32).sqrt();
    embed_forward(
        s,
        ctx,
        &a.tgt_x,
        &a.tgt_in,
        &p.tgt_emb,
        &model.pe,
        b,
        t,
        c,
        cfg.tgt_vocab,
        scale,
    )?;
    drop_in_place(s, ctx, dropout, &a.tgt_x, tgt_site(cfg))?;
    let mut x = &a.tgt_x;
    for (i, (w, l)) in p.dec.iter().zip(&a.dec).enumerate() {
        let sites = dec_sites(cfg, i);
        self_attn_forward(
            s,
            ctx,
            &w.sa,
            (&l.qkv, &l.sa, &l.sa_stats, &l.saproj),
            x,
            None,
            (b, t, c, nh),
            true,
        )?;
        drop_in_place(s, ctx, dropout, &l.saproj, sites[0])?;
        add_norm_forward(
            s,
            ctx,
            (&l.res1, &l.x1, &l.x1_mean, &l.x1_rstd),
            x,
            &l.saproj,
            &w.norm1,
            (b, t, c),
            eps,
        )?;
        let ca = &w.ca;
        matmul_forward(s, ctx, &l.cq, &l.x1, &ca.q_w, Some(&ca.q_b), b * t, c, c)?;
        matmul_forward(
            s,
            ctx,
            &l.ckv,
            &a.memory,
            &ca.kv_w,
            Some(&ca.kv_b),
            b * sl,
            c,
            2 * c,
        )?;
        let cross = MhaLayout::cross(c);
        mha_forward(
            s,
            ctx,
            &l.ca,
            &l.ca_stats,
            &l.cq,
            &l.ckv,
            Some(&a.src_pad),
            cross,
            b,
            t,
            sl,
            c,
            nh,
            false,
        )?;
        matmul_forward(
            s,
            ctx,
            &l.caproj,
            &l.ca,
            &ca.out_w,
            Some(&ca.out_b),
            b * t,
            c,
            c,
        )?;
        drop_in_place(s, ctx, dropout, &l.caproj, sites[1])?;
        add_norm_forward(
            s,
            ctx,
            (&l.res2, &l.x2, &l.x2_mean, &l.x2_rstd),
            &l.x1,
            &l.caproj,
            &w.norm2,
            (b, t, c),
            eps,
        )?;
        ffn_forward(
            s,
            ctx,
            &w.ffn,
            (&l.ff1, &l.ff1_act, &l.ff2),
            &l.x2,
            (b * t, c, f),
            Activation::Relu,
        )?;
        drop_in_place(s, ctx, dropout, &l.ff2, sites[2])?;
        add_norm_forward(
            s,
            ctx,
            (&l.res3, &l.x3, &l.x3_mean, &l.x3_rstd),
            &l.x2,
            &l.ff2,
            &w.norm3,
            (b, t, c),
            eps,
        )?;
        x = &l.x3;
    }
    let n = &p.dec_norm;
    layernorm_forward(
        s, ctx, &a.y, &a.y_mean, &a.y_rstd, x, &n.w, &n.b, b, t, c, eps,
    )?;
    match &a.classifier {
        None => classifier_forward(s, ctx, &a.logits, &a.y, &p.tgt_emb, b * t, c, cfg.tgt_vocab),
        Some(ch) => classifier_crossentropy_forward(
            s,
            ctx,
            ch,
            &a.logits,
            &a.y,
            &p.tgt_emb,
            None,
            &a.tgt_out,
            b * t,
            c,
            cfg.tgt_vocab,
        ),
    }
}

/// Record the whole forward pass: encoder, then decoder.
pub fn record_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
) -> Result<()> {
    record_forward_dropout(s, ctx, model, a, None)
}

/// [`record_forward`] with `dropout` (training; see [`record_encoder_dropout`] and
/// [`record_decoder_dropout`]).
pub fn record_forward_dropout(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    a: &Seq2seqActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    record_encoder_dropout(s, ctx, model, a, dropout)?;
    record_decoder_dropout(s, ctx, model, a, dropout)
}

/// Record the loss: per-position cross-entropy against tgt_out and its mean over the
/// counted positions.
pub fn record_loss(
    s: &mut Schedule,
    ctx: &GpuContext,
    cfg: &Seq2seqConfig,
    a: &Seq2seqActs,
) -> Result<()> {
    let bt = a.b * a.t;
    if let Some(ch) = &a.classifier {
        return classifier_crossentropy_loss(
            s,
            ctx,
            &a.losses,
            &a.loss_stats,
            ch,
            &a.tgt_out,
            bt,
            cfg.tgt_vocab,
        );
    }
    crossentropy_forward(s, ctx, &a.losses, &a.logits, &a.tgt_out, bt, cfg.tgt_vocab)?;
    crossentropy_mean(s, ctx, &a.loss_stats, &a.losses, &a.tgt_out, bt)
}

/// Record the backward pass of forward + loss, adding into `grads` and `d` (zeroed by the
/// caller; each block's gradients are zeroed again here before the block, since they may
/// be one set, [`Seq2seqActs::gradients`]); the loss is weighted by `grad_scale`. With
/// the `dropout` the forward was recorded with ([`record_forward_dropout`]).
/// Overwrites the logits with dlogits.
#[allow(clippy::too_many_arguments)]
pub fn record_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Seq2seq,
    grads: &Seq2seqTensors,
    a: &Seq2seqActs,
    d: &Seq2seqActs,
    grad_scale: f32,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (b, sl, t, c, nh, f, v) = (
        a.b,
        a.s,
        a.t,
        cfg.d_model,
        cfg.heads,
        cfg.ffn,
        cfg.tgt_vocab,
    );
    let scale = (c as f32).sqrt();
    match &a.classifier {
        None => {
            crossentropy_backward_inplace(
                s,
                ctx,
                &a.logits,
                &a.tgt_out,
                &a.loss_stats,
                b * t,
                v,
                grad_scale,
            )?;
            classifier_backward(
                s,
                ctx,
                &d.y,
                &grads.tgt_emb,
                &a.logits,
                &a.y,
                &p.tgt_emb,
                b * t,
                c,
                v,
            )?;
        }
        Some(ch) => classifier_crossentropy_backward(
            s,
            ctx,
            &d.y,
            &grads.tgt_emb,
            ch,
            &a.logits,
            &a.y,
            &p.tgt_emb,
            None,
            &a.tgt_out,
            &a.loss_stats,
            b * t,
            c,
            v,
            grad_scale,
        )?,
    }
    // Decoder, last block first. The gradient of a block's output is that of the next
    // block's input (or of the final norm's input).
    let dec_in = |l: usize| {
        if l == 0 {
            (&a.tgt_x, &d.tgt_x)
        } else {
            (&a.dec[l - 1].x3, &d.dec[l - 1].x3)
        }
    };
    let (last, dlast) = dec_in(cfg.decoder_layers);
    let n = &p.dec_norm;
    layernorm_backward(
        s,
        ctx,
        dlast,
        &grads.dec_norm.w,
        &grads.dec_norm.b,
        &d.y,
        last,
        &n.w,
        &a.y_mean,
        &a.y_rstd,
        b,
        t,
        c,
    )?;
    for l in (0..cfg.decoder_layers).rev() {
        zero_block_grads(s, &d.dec, l);
        let (w, g, x, dx) = (&p.dec[l], &grads.dec[l], &a.dec[l], &d.dec[l]);
        let (inp, dinp) = dec_in(l);
        let btc = (b, t, c);
        let sites = dec_sites(cfg, l);
        add_norm_backward(
            s,
            ctx,
            (&dx.x2, &dx.ff2),
            (&g.norm3, &dx.res3),
            &dx.x3,
            (&x.res3, &x.x3_mean, &x.x3_rstd),
            &w.norm3,
            btc,
        )?;
        undrop_in_place(s, ctx, dropout, &dx.ff2, sites[2])?;
        ffn_backward(
            s,
            ctx,
            &dx.x2,
            &g.ffn,
            (&dx.ff1, &dx.ff1_act, &dx.ff2),
            &x.x2,
            (&x.ff1, &x.ff1_act),
            &w.ffn,
            (b * t, c, f),
            Activation::Relu,
        )?;
        add_norm_backward(
            s,
            ctx,
            (&dx.x1, &dx.caproj),
            (&g.norm2, &dx.res2),
            &dx.x2,
            (&x.res2, &x.x2_mean, &x.x2_rstd),
            &w.norm2,
            btc,
        )?;
        undrop_in_place(s, ctx, dropout, &dx.caproj, sites[1])?;
        let (ca, gca) = (&w.ca, &g.ca);
        matmul_backward(
            s,
            ctx,
            &dx.ca,
            &gca.out_w,
            Some(&gca.out_b),
            &dx.caproj,
            &x.ca,
            &ca.out_w,
            b * t,
            c,
            c,
        )?;
        let cross = MhaLayout::cross(c);
        mha_backward(
            s,
            ctx,
            &dx.cq,
            &dx.ckv,
            &dx.ca,
            &x.cq,
            &x.ckv,
            Some(&a.src_pad),
            &x.ca,
            &x.ca_stats,
            cross,
            b,
            t,
            sl,
            c,
            nh,
            false,
        )?;
        matmul_backward(
            s,
            ctx,
            &dx.x1,
            &gca.q_w,
            Some(&gca.q_b),
            &dx.cq,
            &x.x1,
            &ca.q_w,
            b * t,
            c,
            c,
        )?;
        matmul_backward(
            s,
            ctx,
            &d.memory,
            &gca.kv_w,
            Some(&gca.kv_b),
            &dx.ckv,
            &a.memory,
            &ca.kv_w,
            b * sl,
            c,
            2 * c,
        )?;
        add_norm_backward(
            s,
            ctx,
            (dinp, &dx.saproj),
            (&g.norm1, &dx.res1),
            &dx.x1,
            (&x.res1, &x.x1_mean, &x.x1_rstd),
            &w.norm1,
            btc,
        )?;
        undrop_in_place(s, ctx, dropout, &dx.saproj, sites[0])?;
        self_attn_backward(
            s,
            ctx,
            dinp,
            &g.sa,
            (&dx.qkv, &dx.sa, &dx.saproj),
            inp,
            (&x.qkv, &x.sa, &x.sa_stats),
            &w.sa,
            None,
            (b, t, c, nh),
            true,
        )?;
    }
    undrop_in_place(s, ctx, dropout, &d.tgt_x, tgt_site(cfg))?;
    embed_backward(
        s,
        ctx,
        &grads.tgt_emb,
        None,
        &d.tgt_x,
        &a.tgt_in,
        b,
        t,
        c,
        v,
        scale,
    )?;
    // Encoder: d.memory now holds every decoder block's cross-attention gradient.
    let enc_in = |l: usize| {
        if l == 0 {
            (&a.src_x, &d.src_x)
        } else {
            (&a.enc[l - 1].x2, &d.enc[l - 1].x2)
        }
    };
    let (last, dlast) = enc_in(cfg.encoder_layers);
    let n = &p.enc_norm;
    layernorm_backward(
        s,
        ctx,
        dlast,
        &grads.enc_norm.w,
        &grads.enc_norm.b,
        &d.memory,
        last,
        &n.w,
        &a.mem_mean,
        &a.mem_rstd,
        b,
        sl,
        c,
    )?;
    for l in (0..cfg.encoder_layers).rev() {
        zero_block_grads(s, &d.enc, l);
        let (w, g, x, dx) = (&p.enc[l], &grads.enc[l], &a.enc[l], &d.enc[l]);
        let (inp, dinp) = enc_in(l);
        let dims = (b, sl, c, nh, f);
        encoder_layer_backward(
            s,
            ctx,
            dinp,
            g,
            dx,
            inp,
            x,
            w,
            Some(&a.src_pad),
            dims,
            Activation::Relu,
            (dropout, enc_sites(l)),
        )?;
    }
    undrop_in_place(s, ctx, dropout, &d.src_x, 0)?;
    embed_backward(
        s,
        ctx,
        &grads.src_emb,
        None,
        &d.src_x,
        &a.src,
        b,
        sl,
        c,
        cfg.src_vocab,
        scale,
    )
}
