//! The tied classifier fused with the language-model loss, chunked over the vocabulary,
//! so the logits (B·T, V) never exist whole: at GPT-2 124M with B·T = 8·1024 they would
//! be 1.6 GB. The forward computes the logits Vc columns at a time, logits chunk
//! (B·T, Vc) = x (B·T, C) · wte[v0..v0+Vc)ᵀ, and folds each chunk into running per-row
//! stats (`crossentropy_chunk_forward`); `crossentropy_chunk_finish` then writes the
//! per-position losses `crossentropy_mean` reads, as for whole logits. The backward
//! recomputes each chunk, turns it into its dlogits in place and adds
//! dx += dlogits · wte[v0..v0+Vc) and dwte[v0..v0+Vc) += dlogitsᵀ · x: one more
//! classifier matmul than the whole-logits path, the price of the memory.
//!
//! Rows [v0, v0 + Vc) of wte (V, C) are contiguous, but the matmul launchers
//! (`matmul::Gemm`) bind whole tensors, so each chunk's rows are copied into a (Vc, C)
//! scratch, `wte_chunk`, and dwte's rows go through the same scratch: copied in, added
//! into by the matmul, copied back: four copies of wte's size per step (the backward's
//! recompute leaves wte's rows in the scratch for dx), small beside the 4·B·T·V·C
//! multiply-adds of the matmuls. The last chunk may be narrower;
//! it uses a prefix of the (B·T, Vc) and (Vc, C) buffers.
//!
//! The classifier may have a bias (V), as BERT's masked-LM decoder has: logits chunk
//! += bias[v0..v0+Vc), and dbias[v0..v0+Vc) += Σ_rows dlogits, each chunk of the bias
//! and of its gradient passing through a (Vc) scratch as wte's rows do.
//!
//! [`ClassifierChunk`] decides between this and whole logits, for GPT-2, for the
//! encoder–decoder's tied output projection (`model::seq2seq`) and for BERT's masked-LM
//! decoder (`model::bert`). CPU references:
//! `reference::matmul::classifier_*` and `reference::crossentropy::crossentropy_chunk_*`.

use std::ops::Range;

use super::crossentropy::{
    crossentropy_chunk_backward_inplace, crossentropy_chunk_finish, crossentropy_chunk_forward,
    crossentropy_mean, ROW_STATS, STATS_LEN,
};
use super::expect_numel;
use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Schedule, Slot, Tensor};
use crate::kernels::matmul::{matmul_backward_bias, Gemm};

/// Whole logits above this many bytes are chunked by [`ClassifierChunk::Auto`].
pub const CLASSIFIER_CHUNK_THRESHOLD: u64 = 64 << 20;

/// Bytes of one logits chunk [`ClassifierChunk::Auto`] aims at: half the threshold, so
/// chunking always at least halves the logits.
pub const CLASSIFIER_CHUNK_BYTES: u64 = CLASSIFIER_CHUNK_THRESHOLD / 2;

/// [`ClassifierChunk::Auto`]'s columns per chunk are a multiple of this (the matmul tile).
const AUTO_COLUMN_QUANTUM: usize = 64;

/// How the classifier meets the loss: whole logits (B·T, V), faster (no recompute), or
/// chunks of Vc vocabulary columns, smaller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClassifierChunk {
    /// Whole logits unless they would exceed [`CLASSIFIER_CHUNK_THRESHOLD`]; then chunks
    /// of about [`CLASSIFIER_CHUNK_BYTES`] (a multiple of 64 columns).
    #[default]
    Auto,
    /// Always whole logits (B·T, V).
    Whole,
    /// Chunks of this many vocabulary columns (the last one may be narrower); V or more
    /// means whole logits.
    Columns(usize),
}

impl ClassifierChunk {
    /// Vc for logits of `rows` rows over a vocabulary of `v`: `None` for whole logits.
    pub fn columns(self, rows: usize, v: usize) -> Result<Option<usize>> {
        match self {
            ClassifierChunk::Whole => Ok(None),
            ClassifierChunk::Columns(0) => Err(Error::Invalid(
                "a classifier chunk needs at least one vocabulary column".into(),
            )),
            ClassifierChunk::Columns(vc) => Ok((vc < v).then_some(vc)),
            ClassifierChunk::Auto => {
                let row_bytes = (v as u64 * 4).max(1);
                if rows as u64 * row_bytes <= CLASSIFIER_CHUNK_THRESHOLD {
                    return Ok(None);
                }
                let fit = (CLASSIFIER_CHUNK_BYTES / (rows.max(1) as u64 * 4)) as usize;
                let vc = (fit / AUTO_COLUMN_QUANTUM * AUTO_COLUMN_QUANTUM).max(AUTO_COLUMN_QUANTUM);
                Ok((vc < v).then_some(vc))
            }
        }
    }
}

/// Columns [0, V) in chunks of `vc`, the last one narrower if `vc` does not divide V.
pub fn vocab_chunks(v: usize, vc: usize) -> Vec<Range<usize>> {
    (0..v)
        .step_by(vc.max(1))
        .map(|v0| v0..(v0 + vc).min(v))
        .collect()
}

/// Scratch of the chunked classifier + loss for B·T rows, allocated once. The logits
/// chunk itself lives with the caller's activations (it is their `logits`).
pub struct ClassifierChunks {
    /// Vc: vocabulary columns per chunk; the last chunk may be narrower.
    pub columns: usize,
    pub row_stats: Tensor, // (B·T, 3): running max, Σ exp(x - max), target's logit
    pub wte_chunk: Tensor, // (Vc, C): rows [v0, v0 + Vc) of wte; in the backward, then of dwte
    /// (Vc): bias[v0..v0 + Vc), then dbias's; only for a classifier with a bias
    /// ([`ClassifierChunks::with_bias`]).
    pub bias_chunk: Option<Tensor>,
}

impl ClassifierChunks {
    /// Scratch for a classifier without a bias (GPT-2's and the encoder–decoder's).
    pub fn new(ctx: &GpuContext, prefix: &str, bt: usize, c: usize, vc: usize) -> Result<Self> {
        if vc == 0 {
            return Err(Error::Invalid(
                "a classifier chunk needs at least one vocabulary column".into(),
            ));
        }
        Ok(ClassifierChunks {
            columns: vc,
            row_stats: Tensor::zeros(
                ctx,
                &format!("{prefix}ce_row_stats"),
                &[bt, ROW_STATS],
                DType::F32,
            )?,
            wte_chunk: Tensor::zeros(ctx, &format!("{prefix}wte_chunk"), &[vc, c], DType::F32)?,
            bias_chunk: None,
        })
    }

    /// Scratch for a classifier with a bias (V) (BERT's masked-LM decoder).
    pub fn with_bias(
        ctx: &GpuContext,
        prefix: &str,
        bt: usize,
        c: usize,
        vc: usize,
    ) -> Result<Self> {
        let chunks = Self::new(ctx, prefix, bt, c, vc)?;
        let label = format!("{prefix}bias_chunk");
        Ok(ClassifierChunks {
            bias_chunk: Some(Tensor::zeros(ctx, &label, &[vc], DType::F32)?),
            ..chunks
        })
    }

    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.row_stats, &self.wte_chunk];
        v.extend(&self.bias_chunk);
        v
    }

    /// The bias scratch paired with `bias`, or an error if these chunks have none.
    fn bias_pair<'a, T>(&'a self, op: &str, bias: Option<T>) -> Result<Option<(T, &'a Tensor)>> {
        match (bias, &self.bias_chunk) {
            (None, _) => Ok(None),
            (Some(b), Some(scratch)) => Ok(Some((b, scratch))),
            (Some(_), None) => Err(Error::Invalid(format!(
                "{op}: a classifier with a bias needs its scratch: make the chunks with \
                 ClassifierChunks::with_bias"
            ))),
        }
    }
}

/// `t` seen as a tensor of `shape`, no larger than it: the same buffer, bound from its
/// start (the narrower last chunk).
fn prefix(t: &Tensor, shape: &[usize]) -> Tensor {
    let numel: usize = shape.iter().product();
    assert!(
        numel <= t.numel(),
        "classifier: prefix of {} too big",
        t.label
    );
    let mut view = t.clone();
    view.shape = shape.to_vec();
    view
}

/// The bytes of rows `rows` of a (·, C) f32 tensor.
fn rows_bytes<'a>(t: &'a Tensor, rows: &Range<usize>, c: usize) -> Slot<'a> {
    let row = (c * 4) as u64;
    Slot {
        buffer: &t.buffer,
        offset: rows.start as u64 * row,
        size: Some(rows.len() as u64 * row),
        label: &t.label,
    }
}

/// Record a copy of rows `rows` of `from` (·, C) to rows `to_rows` of `to` (·, C).
fn copy_rows(
    s: &mut Schedule,
    from: &Tensor,
    rows: &Range<usize>,
    to: &Tensor,
    at: usize,
    c: usize,
) {
    let src = rows_bytes(from, rows, c);
    let dst = rows_bytes(to, &(at..at + rows.len()), c);
    s.copy(src, dst, src.size.unwrap_or(0));
}

/// Error unless `t` holds exactly `n` elements, naming `what`.
fn expect_chunk_numel(t: &Tensor, n: usize, what: &str) -> Result<()> {
    if t.numel() != n {
        return Err(Error::Invalid(format!(
            "{what} {} has shape {:?} ({} elements), expected {n}",
            t.label,
            t.shape,
            t.numel()
        )));
    }
    Ok(())
}

/// logits (M, Vc) = x (M, C) · wte[cols]ᵀ (+ bias[cols]) for the vocabulary columns
/// `cols` (Vc of them) of wte (V, C); wte's rows `cols` are first copied into wte_chunk
/// (at least (Vc, C)), and with a bias (V), its columns into `bias` = (bias,
/// bias_chunk), the scratch at least (Vc). `logits` holds at least M·Vc elements; the
/// chunk is its prefix.
#[allow(clippy::too_many_arguments)]
pub fn classifier_chunk_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    logits: &Tensor,
    wte_chunk: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    m: usize,
    c: usize,
    v: usize,
    cols: Range<usize>,
) -> Result<()> {
    check_cols(
        "classifier_chunk_forward",
        logits,
        wte_chunk,
        m,
        c,
        v,
        &cols,
    )?;
    expect_numel(x, m * c)?;
    expect_numel(wte, v * c)?;
    let vc = cols.len();
    let w = prefix(wte_chunk, &[vc, c]);
    copy_rows(s, wte, &cols, &w, 0, c);
    let b = match bias {
        Some((bias, bias_chunk)) => {
            expect_numel(bias, v)?;
            expect_bias_chunk("classifier_chunk_forward", bias_chunk, vc)?;
            let b = prefix(bias_chunk, &[vc]);
            copy_rows(s, bias, &cols, &b, 0, 1);
            Some(b)
        }
        None => None,
    };
    let form = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    form.record(
        s,
        ctx,
        &prefix(logits, &[m, vc]),
        x,
        &w,
        b.as_ref(),
        m,
        c,
        vc,
    )
}

/// Error unless the bias scratch holds at least `vc` elements.
fn expect_bias_chunk(op: &str, bias_chunk: &Tensor, vc: usize) -> Result<()> {
    if bias_chunk.numel() < vc {
        return Err(Error::Invalid(format!(
            "{op}: {} has {} elements, a chunk of {vc} columns needs {vc}",
            bias_chunk.label,
            bias_chunk.numel()
        )));
    }
    Ok(())
}

/// Gradients of [`classifier_chunk_forward`], added into (`+=`) each:
/// dx (M, C) += dlogits (M, Vc) · wte[cols], dwte[cols] += dlogitsᵀ · x (M, C) and, with
/// `dbias` = (dbias (V), bias_chunk), dbias[cols] += Σ_rows dlogits.
/// wte_chunk (at least (Vc, C)) must hold wte's rows `cols`, as the chunk's forward (the
/// backward's recompute of the chunk) leaves it; dwte's rows then pass through it, and
/// dbias's columns through bias_chunk.
#[allow(clippy::too_many_arguments)]
pub fn classifier_chunk_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    dwte: &Tensor,
    dbias: Option<(&Tensor, &Tensor)>,
    wte_chunk: &Tensor,
    dlogits: &Tensor,
    x: &Tensor,
    m: usize,
    c: usize,
    v: usize,
    cols: Range<usize>,
) -> Result<()> {
    check_cols(
        "classifier_chunk_backward",
        dlogits,
        wte_chunk,
        m,
        c,
        v,
        &cols,
    )?;
    expect_numel(dx, m * c)?;
    expect_numel(dwte, v * c)?;
    expect_numel(x, m * c)?;
    let vc = cols.len();
    let w = prefix(wte_chunk, &[vc, c]);
    let dl = prefix(dlogits, &[m, vc]);
    let dx_form = Gemm {
        accumulate: true,
        ..Gemm::default()
    };
    dx_form.record(s, ctx, dx, &dl, &w, None, m, vc, c)?;
    // dwte[cols] (Vc, C) += dlogits (M, Vc)ᵀ · x (M, C), through the scratch.
    copy_rows(s, dwte, &cols, &w, 0, c);
    let dwte_form = Gemm {
        trans_a: true,
        accumulate: true,
        ..Gemm::default()
    };
    dwte_form.record(s, ctx, &w, &dl, x, None, vc, m, c)?;
    copy_rows(s, &w, &(0..vc), dwte, cols.start, c);
    if let Some((dbias, bias_chunk)) = dbias {
        expect_numel(dbias, v)?;
        expect_bias_chunk("classifier_chunk_backward", bias_chunk, vc)?;
        let db = prefix(bias_chunk, &[vc]);
        copy_rows(s, dbias, &cols, &db, 0, 1);
        matmul_backward_bias(s, ctx, &db, &dl, m, vc)?;
        copy_rows(s, &db, &(0..vc), dbias, cols.start, 1);
    }
    Ok(())
}

/// Error unless `cols` is a non-empty range of [0, V) whose chunk fits `logits` (M·Vc)
/// and `wte_chunk` (Vc·C).
fn check_cols(
    op: &str,
    logits: &Tensor,
    wte_chunk: &Tensor,
    m: usize,
    c: usize,
    v: usize,
    cols: &Range<usize>,
) -> Result<()> {
    if cols.is_empty() || cols.end > v {
        return Err(Error::Invalid(format!(
            "{op}: columns {cols:?} are not a non-empty chunk of V = {v}"
        )));
    }
    for (t, n) in [(logits, m * cols.len()), (wte_chunk, cols.len() * c)] {
        if t.numel() < n {
            return Err(Error::Invalid(format!(
                "{op}: {} has {} elements, columns {cols:?} need {n}",
                t.label,
                t.numel()
            )));
        }
    }
    Ok(())
}

/// The classifier's forward for the chunked loss: for each chunk of Vc columns, logits
/// (M, Vc) = x (M, C) · wte[v0..v0+Vc)ᵀ (+ bias[v0..v0+Vc) with a bias (V)), folded into
/// row_stats (M, 3). Follow it with [`classifier_crossentropy_loss`] for the losses and
/// their mean.
#[allow(clippy::too_many_arguments)]
pub fn classifier_crossentropy_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    chunks: &ClassifierChunks,
    logits: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    m: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    let vc = chunks.columns;
    expect_chunk_numel(
        logits,
        m * vc,
        "classifier_crossentropy_forward: logits chunk",
    )?;
    let bias = chunks.bias_pair("classifier_crossentropy_forward", bias)?;
    for cols in vocab_chunks(v, vc) {
        let (v0, n) = (cols.start, cols.len());
        let w = &chunks.wte_chunk;
        classifier_chunk_forward(s, ctx, logits, w, x, wte, bias, m, c, v, cols)?;
        let chunk = prefix(logits, &[m, n]);
        crossentropy_chunk_forward(s, ctx, &chunks.row_stats, &chunk, targets, m, v, v0, n)?;
    }
    Ok(())
}

/// losses (M) and their stats (4) = [mean, count, 1/count, sum] from the row stats
/// [`classifier_crossentropy_forward`] left: what `crossentropy_forward` and
/// `crossentropy_mean` give for whole logits.
#[allow(clippy::too_many_arguments)]
pub fn classifier_crossentropy_loss(
    s: &mut Schedule,
    ctx: &GpuContext,
    losses: &Tensor,
    stats: &Tensor,
    chunks: &ClassifierChunks,
    targets: &Tensor,
    m: usize,
    v: usize,
) -> Result<()> {
    crossentropy_chunk_finish(s, ctx, losses, &chunks.row_stats, targets, m, v)?;
    crossentropy_mean(s, ctx, stats, losses, targets, m)
}

/// The backward of the classifier and the loss, chunk by chunk: recompute logits
/// (M, Vc), turn them into dlogits in place (scaled by stats[2] · grad_scale, as
/// `crossentropy_backward_inplace`), then dx (M, C) += dlogits · wte[v0..v0+Vc) and
/// dwte[v0..v0+Vc) += dlogitsᵀ · x, and with `bias` = (bias, dbias), both (V),
/// dbias[v0..v0+Vc) += Σ_rows dlogits. `stats` (4) comes from
/// [`classifier_crossentropy_loss`]; row_stats (in `chunks`) from the forward.
#[allow(clippy::too_many_arguments)]
pub fn classifier_crossentropy_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    dwte: &Tensor,
    chunks: &ClassifierChunks,
    logits: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    bias: Option<(&Tensor, &Tensor)>,
    targets: &Tensor,
    stats: &Tensor,
    m: usize,
    c: usize,
    v: usize,
    grad_scale: f32,
) -> Result<()> {
    let vc = chunks.columns;
    expect_chunk_numel(
        logits,
        m * vc,
        "classifier_crossentropy_backward: logits chunk",
    )?;
    expect_numel(stats, STATS_LEN)?;
    let w = &chunks.wte_chunk;
    let bias = chunks.bias_pair("classifier_crossentropy_backward", bias)?;
    for cols in vocab_chunks(v, vc) {
        let (v0, n) = (cols.start, cols.len());
        let fb = bias.map(|((bias, _), b)| (bias, b));
        classifier_chunk_forward(s, ctx, logits, w, x, wte, fb, m, c, v, cols.clone())?;
        let chunk = prefix(logits, &[m, n]);
        crossentropy_chunk_backward_inplace(
            s,
            ctx,
            &chunk,
            targets,
            &chunks.row_stats,
            stats,
            m,
            v,
            v0,
            n,
            grad_scale,
        )?;
        let db = bias.map(|((_, dbias), b)| (dbias, b));
        classifier_chunk_backward(s, ctx, dx, dwte, db, w, logits, x, m, c, v, cols)?;
    }
    Ok(())
}
