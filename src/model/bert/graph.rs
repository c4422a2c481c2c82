//! BERT's activations at fixed (B, T) and its passes, recorded into schedules: the
//! encoder (embeddings → post-LN GELU layers), and on top of it one of: the masked-LM
//! head and its loss, the pooler + classifier and its loss, or mean pooling + L2
//! normalisation (sentence embeddings). Backward walks each in reverse and adds into the
//! gradients, which the caller zeroes.
//!
//! The masked-LM decoder (hn · wordᵀ + bias) meets its loss on whole logits (B·T, V), or
//! fused with it and chunked over the vocabulary (`kernels::classifier`) when whole
//! logits would be large, as `ClassifierChunk` decides.
//!
//! Embeddings are word + position (`embed_forward` with the position table as its
//! positions) plus token type (`embed_forward` again, over a zero table), then LayerNorm.

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
use crate::kernels::gelu::{gelu_erf_backward, gelu_erf_forward};
use crate::kernels::layernorm::{
    layernorm_backward, layernorm_forward, residual_layernorm_backward, residual_layernorm_forward,
};
use crate::kernels::matmul::{matmul_backward, matmul_backward_bias, matmul_forward, Gemm};
use crate::kernels::pool::{l2norm_forward, mean_pool_forward};
use crate::kernels::tanh::{tanh_backward, tanh_forward};
use crate::model::bert::params::BertTensors;
use crate::model::bert::{Bert, BertConfig};
use crate::model::blocks::{
    encoder_layer_backward, encoder_layer_forward, shared_block_grads, unique_tensors,
    zero_block_grads, Activation, EncoderLayerActs,
};

/// The masked-LM head's activations.
pub struct MlmActs {
    pub h: Tensor,       // (B, T, C): dense
    pub h_act: Tensor,   // (B, T, C): GELU
    pub hn: Tensor,      // (B, T, C): LayerNorm
    pub hn_mean: Tensor, // (B, T)
    pub hn_rstd: Tensor, // (B, T)
    /// (B, T, V), or (B·T, Vc) chunked; dlogits after backward; (1) in gradients
    pub logits: Tensor,
    pub targets: Tensor, // (B, T) i32: original ids at masked positions, -100 elsewhere
    pub losses: Tensor,  // (B, T)
    pub loss_stats: Tensor, // (4)
    /// The decoder fused with the loss over chunks of Vc vocabulary columns
    /// (`kernels::classifier`); `None`: whole logits, and in gradients.
    pub classifier: Option<ClassifierChunks>,
}

/// The classifier's activations.
pub struct ClassActs {
    pub cls: Tensor,        // (B, C): the [CLS] rows of the last layer
    pub pre: Tensor,        // (B, C): pooler dense
    pub pooled: Tensor,     // (B, C): tanh
    pub dropped: Tensor,    // (B, C): pooled after dropout (training with dropout only)
    pub logits: Tensor,     // (B, NL); overwritten by dlogits in backward
    pub labels: Tensor,     // (B) i32, -100 = not counted
    pub losses: Tensor,     // (B)
    pub loss_stats: Tensor, // (4)
}

/// Every activation at (B, T). The same struct holds their gradients.
pub struct BertActs {
    pub b: usize,
    pub t: usize,
    pub ids: Tensor,     // (B, T) i32
    pub types: Tensor,   // (B, T) i32
    pub pad: Tensor,     // (B, T) i32: nonzero = padding (hidden from attention)
    pub mask: Tensor,    // (B, T) i32: 1 = real token (mean pooling)
    pub emb_wp: Tensor,  // (B, T, C): word + position
    pub emb_t: Tensor,   // (B, T, C): token type
    pub emb_sum: Tensor, // (B, T, C)
    pub x0: Tensor,      // (B, T, C): after the embedding LayerNorm
    pub x0_mean: Tensor, // (B, T)
    pub x0_rstd: Tensor, // (B, T)
    pub layers: Vec<EncoderLayerActs>,
    pub mlm: Option<MlmActs>,
    pub class: Option<ClassActs>,
    pub pooled_mean: Tensor, // (B, C): mean over real tokens
    pub embedding: Tensor,   // (B, C): L2-normalised
}

impl BertActs {
    /// Activations whose masked-LM logits (if the model has that head) are whole or
    /// chunked as [`ClassifierChunk::Auto`] decides: nothing reads them but the loss.
    pub fn new(ctx: &GpuContext, model: &Bert, b: usize, t: usize, prefix: &str) -> Result<Self> {
        Self::with_classifier(ctx, model, b, t, prefix, ClassifierChunk::Auto)
    }

    /// Activations whose masked-LM decoder meets the loss as `chunk` decides: on whole
    /// logits, or fused and chunked over the vocabulary.
    pub fn with_classifier(
        ctx: &GpuContext,
        model: &Bert,
        b: usize,
        t: usize,
        prefix: &str,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        Self::build(ctx, model, b, t, prefix, chunk, false)
    }

    /// The gradients of [`with_classifier`](Self::with_classifier)'s activations, labelled
    /// `grad.`: the blocks share one set ([`shared_block_grads`]), which
    /// [`record_encoder_backward`] zeroes before each block. The masked-LM logits, which
    /// the backward never reads (the activations' own hold dlogits), are one float and
    /// have no chunk scratch.
    pub fn gradients(
        ctx: &GpuContext,
        model: &Bert,
        b: usize,
        t: usize,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        Self::build(ctx, model, b, t, "grad.", chunk, true)
    }

    fn build(
        ctx: &GpuContext,
        model: &Bert,
        b: usize,
        t: usize,
        prefix: &str,
        chunk: ClassifierChunk,
        gradients: bool,
    ) -> Result<Self> {
        let cfg = &model.config;
        if b == 0 || t == 0 {
            return Err(Error::Invalid(format!(
                "batch {b} × length {t}: both must be positive"
            )));
        }
        if t > cfg.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "sequence length {t} exceeds the model's {} positions",
                cfg.max_position_embeddings
            )));
        }
        let (c, nh, f) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.intermediate_size,
        );
        let f32t = |n: String, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{n}"), shape, DType::F32)
        };
        let i32t = |n: &str, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{n}"), shape, DType::I32)
        };
        let (btc, bt) = ([b, t, c], [b, t]);
        let (dims, n) = ((b, t, c, nh, f), cfg.num_hidden_layers);
        let layers = if gradients {
            let one = EncoderLayerActs::new(ctx, &format!("{prefix}layer."), dims)?;
            shared_block_grads(one, f32t("layer.odd.x2".into(), &btc)?, n)
        } else {
            (0..n)
                .map(|l| EncoderLayerActs::new(ctx, &format!("{prefix}layer.{l}."), dims))
                .collect::<Result<Vec<_>>>()?
        };
        let mlm = match model.params.mlm {
            Some(_) => {
                let v = cfg.vocab_size;
                let vc = chunk.columns(b * t, v)?;
                let (logits_name, logits_shape) = match vc {
                    _ if gradients => ("mlm.logits", vec![1]),
                    Some(vc) => ("mlm.logits chunk", vec![b * t, vc]),
                    None => ("mlm.logits", vec![b, t, v]),
                };
                Some(MlmActs {
                    h: f32t("mlm.h".into(), &btc)?,
                    h_act: f32t("mlm.h_act".into(), &btc)?,
                    hn: f32t("mlm.hn".into(), &btc)?,
                    hn_mean: f32t("mlm.hn_mean".into(), &bt)?,
                    hn_rstd: f32t("mlm.hn_rstd".into(), &bt)?,
                    logits: f32t(logits_name.into(), &logits_shape)?,
                    targets: i32t("mlm.targets", &bt)?,
                    losses: f32t("mlm.losses".into(), &bt)?,
                    loss_stats: f32t("mlm.loss_stats".into(), &[STATS_LEN])?,
                    classifier: vc
                        .filter(|_| !gradients)
                        .map(|vc| {
                            let prefix = format!("{prefix}mlm.");
                            ClassifierChunks::with_bias(ctx, &prefix, b * t, c, vc)
                        })
                        .transpose()?,
                })
            }
            None => None,
        };
        let class = match &model.params.classifier {
            Some(head) => {
                let nl = head.b.numel();
                Some(ClassActs {
                    cls: f32t("cls".into(), &[b, c])?,
                    pre: f32t("pooler_pre".into(), &[b, c])?,
                    pooled: f32t("pooled".into(), &[b, c])?,
                    dropped: f32t("pooled_dropped".into(), &[b, c])?,
                    logits: f32t("class.logits".into(), &[b, nl])?,
                    labels: i32t("class.labels", &[b])?,
                    losses: f32t("class.losses".into(), &[b])?,
                    loss_stats: f32t("class.loss_stats".into(), &[STATS_LEN])?,
                })
            }
            None => None,
        };
        Ok(BertActs {
            b,
            t,
            ids: i32t("ids", &bt)?,
            types: i32t("types", &bt)?,
            pad: i32t("pad", &bt)?,
            mask: i32t("mask", &bt)?,
            emb_wp: f32t("emb_wp".into(), &btc)?,
            emb_t: f32t("emb_t".into(), &btc)?,
            emb_sum: f32t("emb_sum".into(), &btc)?,
            x0: f32t("x0".into(), &btc)?,
            x0_mean: f32t("x0_mean".into(), &bt)?,
            x0_rstd: f32t("x0_rstd".into(), &bt)?,
            layers,
            mlm,
            class,
            pooled_mean: f32t("pooled_mean".into(), &[b, c])?,
            embedding: f32t("embedding".into(), &[b, c])?,
        })
    }

    /// The float tensors, each once (what a gradient copy zeroes).
    pub fn floats(&self) -> Vec<&Tensor> {
        let mut v = vec![
            &self.emb_wp,
            &self.emb_t,
            &self.emb_sum,
            &self.x0,
            &self.x0_mean,
            &self.x0_rstd,
        ];
        for l in &self.layers {
            v.extend(l.all());
        }
        if let Some(m) = &self.mlm {
            v.extend([
                &m.h,
                &m.h_act,
                &m.hn,
                &m.hn_mean,
                &m.hn_rstd,
                &m.logits,
                &m.losses,
                &m.loss_stats,
            ]);
            if let Some(ch) = &m.classifier {
                v.extend(ch.all());
            }
        }
        if let Some(c) = &self.class {
            v.extend([
                &c.cls,
                &c.pre,
                &c.pooled,
                &c.dropped,
                &c.logits,
                &c.losses,
                &c.loss_stats,
            ]);
        }
        v.extend([&self.pooled_mean, &self.embedding]);
        unique_tensors(v)
    }

    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.ids, &self.types, &self.pad, &self.mask];
        if let Some(m) = &self.mlm {
            v.push(&m.targets);
        }
        if let Some(c) = &self.class {
            v.push(&c.labels);
        }
        v.extend(self.floats());
        v
    }

    /// The last layer's output (or the embeddings', with no layer).
    pub fn last(&self) -> &Tensor {
        self.layers.last().map_or(&self.x0, |l| &l.x2)
    }

    /// Upload inputs: ids, token types and the attention mask (1 = real token), (B·T) each.
    pub fn write_inputs(
        &self,
        ctx: &GpuContext,
        model: &Bert,
        ids: &[i32],
        types: &[i32],
        mask: &[i32],
    ) -> Result<()> {
        let pad = check_inputs(&model.config, ids, types, mask, self.b * self.t)?;
        self.ids.write(ctx, ids)?;
        self.types.write(ctx, types)?;
        self.mask.write(ctx, mask)?;
        self.pad.write(ctx, &pad)
    }
}

/// Error unless ids, token types and the attention mask hold `n` values each, ids lie in
/// the vocabulary and types in the type vocabulary; returns the padding flags (1 − mask)
/// the attention kernels read.
pub fn check_inputs(
    cfg: &BertConfig,
    ids: &[i32],
    types: &[i32],
    mask: &[i32],
    n: usize,
) -> Result<Vec<i32>> {
    for (name, v) in [
        ("ids", ids),
        ("token types", types),
        ("attention mask", mask),
    ] {
        if v.len() != n {
            return Err(Error::Invalid(format!(
                "{name}: {} values, expected {n}",
                v.len()
            )));
        }
    }
    if let Some(i) = ids
        .iter()
        .position(|&x| x < 0 || x as usize >= cfg.vocab_size)
    {
        return Err(Error::Invalid(format!(
            "ids[{i}] = {} is outside the vocabulary of {}",
            ids[i], cfg.vocab_size
        )));
    }
    if let Some(i) = types
        .iter()
        .position(|&x| x < 0 || x as usize >= cfg.type_vocab_size)
    {
        return Err(Error::Invalid(format!(
            "token type {} at {i} is outside 0..{}",
            types[i], cfg.type_vocab_size
        )));
    }
    Ok(mask.iter().map(|&m| (m == 0) as i32).collect())
}

/// Dropout site of the embeddings' output; block l's attention output is `1 + 2l`, its
/// feed-forward output `2 + 2l`, and the pooled [CLS] row (the classifier's input)
/// `1 + 2L` (see shaders/dropout.wgsl).
const DROPOUT_SITE_EMBEDDINGS: u32 = 0;

fn dropout_sites(l: usize) -> [u32; 2] {
    [1 + 2 * l as u32, 2 + 2 * l as u32]
}

fn dropout_site_pooled(cfg: &BertConfig) -> u32 {
    1 + 2 * cfg.num_hidden_layers as u32
}

/// Record the encoder: ids → the last layer's output (B, T, C). With `dropout`
/// (training), Hugging Face's hidden dropout: the embeddings' output and each block's
/// attention and feed-forward outputs, in place. Attention probabilities are not
/// dropped: the fused attention kernels never materialise them.
pub fn record_encoder(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    a: &BertActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (b, t, c, nh, f) = (
        a.b,
        a.t,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.intermediate_size,
    );
    let eps = cfg.layer_norm_eps as f32;
    embed_forward(
        s,
        ctx,
        &a.emb_wp,
        &a.ids,
        &p.word,
        &p.pos,
        b,
        t,
        c,
        cfg.vocab_size,
        1.0,
    )?;
    embed_forward(
        s,
        ctx,
        &a.emb_t,
        &a.types,
        &p.types,
        &model.zero_pe,
        b,
        t,
        c,
        cfg.type_vocab_size,
        1.0,
    )?;
    // emb_sum = word + position embeddings + type embeddings, and its layernorm, in one
    // launch.
    let n = &p.emb_norm;
    residual_layernorm_forward(
        s, ctx, &a.emb_sum, &a.x0, &a.x0_mean, &a.x0_rstd, &a.emb_wp, &a.emb_t, &n.w, &n.b, b, t,
        c, eps,
    )?;
    drop_in_place(s, ctx, dropout, &a.x0, DROPOUT_SITE_EMBEDDINGS)?;
    let mut x = &a.x0;
    for (i, (w, l)) in p.layers.iter().zip(&a.layers).enumerate() {
        encoder_layer_forward(
            s,
            ctx,
            w,
            l,
            x,
            Some(&a.pad),
            (b, t, c, nh, f),
            eps,
            Activation::GeluErf,
            (dropout, dropout_sites(i)),
        )?;
        x = &l.x2;
    }
    Ok(())
}

/// Backward of [`record_encoder`] (with the same `dropout`) from the gradient in
/// `d.last()`. Zeroes each block's gradients before the block (they may be one set,
/// [`BertActs::gradients`]); the caller zeroes the rest first.
pub fn record_encoder_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    g: &BertTensors,
    a: &BertActs,
    d: &BertActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    let p = &model.params;
    let (b, t, c, nh, f) = (
        a.b,
        a.t,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.intermediate_size,
    );
    let input = |l: usize| {
        if l == 0 {
            (&a.x0, &d.x0)
        } else {
            (&a.layers[l - 1].x2, &d.layers[l - 1].x2)
        }
    };
    for l in (0..cfg.num_hidden_layers).rev() {
        zero_block_grads(s, &d.layers, l);
        let (w, gl, x, dx) = (&p.layers[l], &g.layers[l], &a.layers[l], &d.layers[l]);
        let (inp, dinp) = input(l);
        encoder_layer_backward(
            s,
            ctx,
            dinp,
            gl,
            dx,
            inp,
            x,
            w,
            Some(&a.pad),
            (b, t, c, nh, f),
            Activation::GeluErf,
            (dropout, dropout_sites(l)),
        )?;
    }
    undrop_in_place(s, ctx, dropout, &d.x0, DROPOUT_SITE_EMBEDDINGS)?;
    let n = &p.emb_norm;
    residual_layernorm_backward(
        s,
        ctx,
        &d.emb_wp,
        &d.emb_t,
        &d.emb_sum,
        &g.emb_norm.w,
        &g.emb_norm.b,
        &d.x0,
        &a.emb_sum,
        &n.w,
        &a.x0_mean,
        &a.x0_rstd,
        b,
        t,
        c,
    )?;
    embed_backward(
        s,
        ctx,
        &g.word,
        Some(&g.pos),
        &d.emb_wp,
        &a.ids,
        b,
        t,
        c,
        cfg.vocab_size,
        1.0,
    )?;
    embed_backward(
        s,
        ctx,
        &g.types,
        None,
        &d.emb_t,
        &a.types,
        b,
        t,
        c,
        cfg.type_vocab_size,
        1.0,
    )
}

/// Record sentence embeddings after the encoder: mean over real tokens, L2-normalised.
pub fn record_embedding(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    a: &BertActs,
) -> Result<()> {
    let c = model.config.hidden_size;
    mean_pool_forward(s, ctx, &a.pooled_mean, a.last(), &a.mask, a.b, a.t, c)?;
    l2norm_forward(s, ctx, &a.embedding, &a.pooled_mean, a.b, c)
}

fn mlm_parts<'a>(
    model: &'a Bert,
    a: &'a BertActs,
) -> Result<(&'a crate::model::bert::params::MlmHeadTensors, &'a MlmActs)> {
    match (&model.params.mlm, &a.mlm) {
        (Some(w), Some(x)) => Ok((w, x)),
        _ => Err(Error::Invalid("the model has no masked-LM head".into())),
    }
}

/// Record the masked-LM head and its loss over the counted targets.
pub fn record_mlm_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    a: &BertActs,
) -> Result<()> {
    let cfg = &model.config;
    let (w, m) = mlm_parts(model, a)?;
    let (bt, c, v) = (a.b * a.t, cfg.hidden_size, cfg.vocab_size);
    let eps = cfg.layer_norm_eps as f32;
    matmul_forward(
        s,
        ctx,
        &m.h,
        a.last(),
        &w.dense_w,
        Some(&w.dense_b),
        bt,
        c,
        c,
    )?;
    gelu_erf_forward(s, ctx, &m.h_act, &m.h, bt * c)?;
    layernorm_forward(
        s, ctx, &m.hn, &m.hn_mean, &m.hn_rstd, &m.h_act, &w.norm.w, &w.norm.b, a.b, a.t, c, eps,
    )?;
    // logits = hn · wordᵀ + bias: the tied decoder, fused with the loss when chunked.
    if let Some(ch) = &m.classifier {
        let word = &model.params.word;
        classifier_crossentropy_forward(
            s,
            ctx,
            ch,
            &m.logits,
            &m.hn,
            word,
            Some(&w.bias),
            &m.targets,
            bt,
            c,
            v,
        )?;
        return classifier_crossentropy_loss(
            s,
            ctx,
            &m.losses,
            &m.loss_stats,
            ch,
            &m.targets,
            bt,
            v,
        );
    }
    let tied = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    tied.record(
        s,
        ctx,
        &m.logits,
        &m.hn,
        &model.params.word,
        Some(&w.bias),
        bt,
        c,
        v,
    )?;
    crossentropy_forward(s, ctx, &m.losses, &m.logits, &m.targets, bt, v)?;
    crossentropy_mean(s, ctx, &m.loss_stats, &m.losses, &m.targets, bt)
}

/// Backward of [`record_mlm_forward`] into `d.last()` and the head's gradients.
pub fn record_mlm_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    g: &BertTensors,
    a: &BertActs,
    d: &BertActs,
    grad_scale: f32,
) -> Result<()> {
    let cfg = &model.config;
    let (w, m) = mlm_parts(model, a)?;
    let (gw, dm) = match (&g.mlm, &d.mlm) {
        (Some(gw), Some(dm)) => (gw, dm),
        _ => return Err(Error::Invalid("gradients without a masked-LM head".into())),
    };
    let (bt, c, v) = (a.b * a.t, cfg.hidden_size, cfg.vocab_size);
    if let Some(ch) = &m.classifier {
        classifier_crossentropy_backward(
            s,
            ctx,
            &dm.hn,
            &g.word,
            ch,
            &m.logits,
            &m.hn,
            &model.params.word,
            Some((&w.bias, &gw.bias)),
            &m.targets,
            &m.loss_stats,
            bt,
            c,
            v,
            grad_scale,
        )?;
    } else {
        crossentropy_backward_inplace(
            s,
            ctx,
            &m.logits,
            &m.targets,
            &m.loss_stats,
            bt,
            v,
            grad_scale,
        )?;
        let dlogits = &m.logits;
        let dx = Gemm {
            accumulate: true,
            ..Gemm::default()
        };
        dx.record(s, ctx, &dm.hn, dlogits, &model.params.word, None, bt, v, c)?;
        let dword = Gemm {
            trans_a: true,
            accumulate: true,
            ..Gemm::default()
        };
        dword.record(s, ctx, &g.word, dlogits, &m.hn, None, v, bt, c)?;
        matmul_backward_bias(s, ctx, &gw.bias, dlogits, bt, v)?;
    }
    layernorm_backward(
        s, ctx, &dm.h_act, &gw.norm.w, &gw.norm.b, &dm.hn, &m.h_act, &w.norm.w, &m.hn_mean,
        &m.hn_rstd, a.b, a.t, c,
    )?;
    gelu_erf_backward(s, ctx, &dm.h, &m.h, &dm.h_act, bt * c)?;
    matmul_backward(
        s,
        ctx,
        d.last(),
        &gw.dense_w,
        Some(&gw.dense_b),
        &dm.h,
        a.last(),
        &w.dense_w,
        bt,
        c,
        c,
    )
}

fn class_parts<'a>(
    model: &'a Bert,
    a: &'a BertActs,
) -> Result<(
    &'a crate::model::bert::params::ClassifierTensors,
    &'a ClassActs,
)> {
    match (&model.params.classifier, &a.class) {
        (Some(w), Some(x)) => Ok((w, x)),
        _ => Err(Error::Invalid("the model has no classifier".into())),
    }
}

/// Record the pooler (tanh of a dense over each row's [CLS] vector), the classifier and
/// the loss against the labels. With `dropout` (training), the classifier reads the
/// pooled vectors dropped (Hugging Face's BertForSequenceClassification), a copy in
/// `dropped`: the backward's tanh needs `pooled` itself.
pub fn record_class_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    a: &BertActs,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let p = &model.params;
    let (w, k) = class_parts(model, a)?;
    let (b, t, c, nl) = (a.b, a.t, model.config.hidden_size, w.b.numel());
    let last = a.last();
    for r in 0..b {
        s.copy(
            last.rows_slot(r * t..r * t + 1, c),
            k.cls.rows_slot(r..r + 1, c),
            (c * 4) as u64,
        );
    }
    matmul_forward(
        s,
        ctx,
        &k.pre,
        &k.cls,
        &p.pooler_w,
        Some(&p.pooler_b),
        b,
        c,
        c,
    )?;
    tanh_forward(s, ctx, &k.pooled, &k.pre, b * c)?;
    let input = match dropout {
        Some(_) => {
            s.copy(
                (&k.pooled).into(),
                (&k.dropped).into(),
                k.pooled.size_bytes(),
            );
            let site = dropout_site_pooled(&model.config);
            drop_in_place(s, ctx, dropout, &k.dropped, site)?;
            &k.dropped
        }
        None => &k.pooled,
    };
    matmul_forward(s, ctx, &k.logits, input, &w.w, Some(&w.b), b, c, nl)?;
    crossentropy_forward(s, ctx, &k.losses, &k.logits, &k.labels, b, nl)?;
    crossentropy_mean(s, ctx, &k.loss_stats, &k.losses, &k.labels, b)
}

/// Backward of [`record_class_forward`] (with the same `dropout`): the [CLS] rows'
/// gradient lands in `d.last()`, which nothing else writes (it must be zero before).
#[allow(clippy::too_many_arguments)]
pub fn record_class_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Bert,
    g: &BertTensors,
    a: &BertActs,
    d: &BertActs,
    grad_scale: f32,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let p = &model.params;
    let (w, k) = class_parts(model, a)?;
    let (gw, dk) = match (&g.classifier, &d.class) {
        (Some(gw), Some(dk)) => (gw, dk),
        _ => return Err(Error::Invalid("gradients without a classifier".into())),
    };
    let (b, t, c, nl) = (a.b, a.t, model.config.hidden_size, w.b.numel());
    crossentropy_backward_inplace(
        s,
        ctx,
        &k.logits,
        &k.labels,
        &k.loss_stats,
        b,
        nl,
        grad_scale,
    )?;
    let input = if dropout.is_some() {
        &k.dropped
    } else {
        &k.pooled
    };
    matmul_backward(
        s,
        ctx,
        &dk.pooled,
        &gw.w,
        Some(&gw.b),
        &k.logits,
        input,
        &w.w,
        b,
        c,
        nl,
    )?;
    let site = dropout_site_pooled(&model.config);
    undrop_in_place(s, ctx, dropout, &dk.pooled, site)?;
    tanh_backward(s, ctx, &dk.pre, &k.pooled, &dk.pooled, b * c)?;
    matmul_backward(
        s,
        ctx,
        &dk.cls,
        &g.pooler_w,
        Some(&g.pooler_b),
        &dk.pre,
        &k.cls,
        &p.pooler_w,
        b,
        c,
        c,
    )?;
    let dlast = d.last();
    for r in 0..b {
        s.copy(
            dk.cls.rows_slot(r..r + 1, c),
            dlast.rows_slot(r * t..r * t + 1, c),
            (c * 4) as u64,
        );
    }
    Ok(())
}
