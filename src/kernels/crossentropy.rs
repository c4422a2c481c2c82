//! Launchers for shaders/crossentropy.wgsl: the language-model loss, softmax fused with
//! cross-entropy over logits (B·T, V) and i32 targets (B·T), as PyTorch's
//! `F.cross_entropy(logits, targets, ignore_index=-100)`. A training step records
//! `crossentropy_forward` (per-position losses), `crossentropy_mean` (stats (4) =
//! [mean, count, 1/count, sum]) and `crossentropy_backward` or
//! `crossentropy_backward_inplace` (dlogits, scaled by 1/count read from stats on the GPU
//! and by a per-launch `grad_scale`: 1, or 1/K when K micro-batches accumulate a step).
//! The backward launchers WRITE dlogits instead of adding into it, the one exception to
//! the crate's `+=` convention for gradients. Logits rows are processed in chunks that
//! fit one binding ([`GpuContext::row_chunks`]), so V = 50257 at any B·T works.
//! The `crossentropy_chunk_*` launchers compute the same loss and gradient from logits
//! chunks of Vc vocabulary columns (running per-row stats (B·T, [`ROW_STATS`]), then
//! per-position losses for `crossentropy_mean`), for a classifier that never holds the
//! whole (B·T, V) logits; `kernels::classifier` drives them.
//! Sampling over logits (softmax with temperature, argmax, top-k) is in `sampling`.
//! CPU references: `crate::reference::crossentropy`.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_numel, groups_1d, row_reduction_lanes, shaders::CROSSENTROPY};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Slot, Tensor};

/// Target value of a position that is not counted (PyTorch's default `ignore_index`);
/// mirrors `IGNORE_INDEX` in shaders/crossentropy.wgsl.
pub const IGNORE_INDEX: i32 = -100;

/// Length of the stats tensor `crossentropy_mean` writes: [mean, count, 1/count, sum].
pub const STATS_LEN: usize = 4;

/// Mirrors `CrossentropyParams` in shaders/crossentropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CrossentropyParams {
    v: u32,          // V: elements per row of logits
    rows: u32,       // rows of logits in this launch's chunk
    row_offset: u32, // index among all B·T rows of the chunk's first row
    bt: u32,         // B·T: length of losses and targets
    grad_scale: f32, // backward only: 1, or 1/K over K accumulated micro-batches
}

pub const CROSSENTROPY_FORWARD: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const CROSSENTROPY_MEAN: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_mean",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const CROSSENTROPY_BACKWARD: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const CROSSENTROPY_BACKWARD_INPLACE: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_backward_inplace",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Error unless `v` is a usable row length (1..2³¹, so an index fits the shader's i32).
fn check_v(op: &str, v: usize) -> Result<()> {
    if v == 0 || v > i32::MAX as usize {
        return Err(Error::Invalid(format!("{op}: V = {v} must be in 1..2^31")));
    }
    Ok(())
}

fn params(
    v: usize,
    rows: &std::ops::Range<usize>,
    bt: usize,
    grad_scale: f32,
) -> CrossentropyParams {
    CrossentropyParams {
        v: v as u32,
        rows: rows.len() as u32,
        row_offset: rows.start as u32,
        bt: bt as u32,
        grad_scale,
    }
}

/// Error unless `grad_scale` is finite.
fn check_scale(op: &str, grad_scale: f32) -> Result<()> {
    if !grad_scale.is_finite() {
        return Err(Error::Invalid(format!(
            "{op}: grad_scale {grad_scale} must be finite"
        )));
    }
    Ok(())
}

/// Invocations per row (`WG` in the shader): 256 on a GPU, [`row_reduction_lanes`]'s on a
/// CPU adapter.
fn wg(ctx: &GpuContext) -> [(&'static str, f64); 1] {
    [("WG", row_reduction_lanes(ctx, 256))]
}

/// One launch of a per-row kernel for each chunk of the B·T rows whose (rows, `width`)
/// logits fit one binding, one workgroup per row: `launch(rows)` gives the label, the
/// bindings and the params of a chunk's launch.
fn row_launches<'a, P: Pod>(
    s: &mut Schedule,
    ctx: &GpuContext,
    desc: &KernelDesc,
    bt: usize,
    width: usize,
    launch: impl Fn(&Range<usize>) -> (String, Vec<Slot<'a>>, P),
) -> Result<()> {
    for rows in ctx.row_chunks(bt, width) {
        let (label, slots, p) = launch(&rows);
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, desc, &wg(ctx), &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// losses (B·T) = -log softmax(logits (B·T, V))[targets (B·T)], 0 where the target is
/// [`IGNORE_INDEX`] and NaN where it is outside [0, V) otherwise.
pub fn crossentropy_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    losses: &Tensor,
    logits: &Tensor,
    targets: &Tensor,
    bt: usize,
    v: usize,
) -> Result<()> {
    check_v("crossentropy_forward", v)?;
    expect_numel(losses, bt)?;
    expect_numel(logits, bt * v)?;
    expect_numel(targets, bt)?;
    expect_dtype(targets, DType::I32)?;
    if bt == 0 {
        return Ok(());
    }
    row_launches(s, ctx, &CROSSENTROPY_FORWARD, bt, v, |rows| {
        let label = format!(
            "crossentropy_forward {} <- {} rows {rows:?}",
            losses.label, logits.label
        );
        (
            label,
            vec![
                losses.into(),
                logits.rows_slot(rows.clone(), v),
                targets.into(),
            ],
            params(v, rows, bt, 0.0),
        )
    })
}

/// stats (4) = [mean, count, 1/count, sum] of losses (B·T) over the positions whose
/// target (B·T) is not [`IGNORE_INDEX`]; all 0 when no position counts. One workgroup,
/// a fixed summation order.
pub fn crossentropy_mean(
    s: &mut Schedule,
    ctx: &GpuContext,
    stats: &Tensor,
    losses: &Tensor,
    targets: &Tensor,
    bt: usize,
) -> Result<()> {
    expect_numel(stats, STATS_LEN)?;
    expect_numel(losses, bt)?;
    expect_numel(targets, bt)?;
    expect_dtype(targets, DType::I32)?;
    let p = params(1, &(0..0), bt, 0.0);
    let label = format!("crossentropy_mean {} <- {}", stats.label, losses.label);
    let slots = [stats.into(), losses.into(), targets.into()];
    s.dispatch(
        ctx,
        &CROSSENTROPY_MEAN,
        &wg(ctx),
        &label,
        &slots,
        Some(&p),
        [1, 1, 1],
    )
}

/// dlogits (B·T, V) = (softmax(logits) - onehot(targets)) · stats[2] · grad_scale, zero
/// rows where the target is [`IGNORE_INDEX`]. WRITES dlogits (=), unlike other backward
/// kernels (+=). `stats` comes from [`crossentropy_mean`]; `grad_scale` is 1 for the
/// gradient of this batch's mean loss, 1/K when K micro-batches accumulate into one step.
/// For dlogits over logits in one buffer, use [`crossentropy_backward_inplace`].
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dlogits: &Tensor,
    logits: &Tensor,
    targets: &Tensor,
    stats: &Tensor,
    bt: usize,
    v: usize,
    grad_scale: f32,
) -> Result<()> {
    check_v("crossentropy_backward", v)?;
    check_scale("crossentropy_backward", grad_scale)?;
    expect_numel(dlogits, bt * v)?;
    expect_numel(logits, bt * v)?;
    expect_numel(targets, bt)?;
    expect_numel(stats, STATS_LEN)?;
    expect_dtype(targets, DType::I32)?;
    if dlogits.buffer == logits.buffer {
        return Err(Error::Invalid(format!(
            "crossentropy_backward: dlogits and logits are the same buffer ({}); \
             use crossentropy_backward_inplace",
            logits.label
        )));
    }
    if bt == 0 {
        return Ok(());
    }
    row_launches(s, ctx, &CROSSENTROPY_BACKWARD, bt, v, |rows| {
        let label = format!(
            "crossentropy_backward {} <- {} rows {rows:?}",
            dlogits.label, logits.label
        );
        (
            label,
            vec![
                dlogits.rows_slot(rows.clone(), v),
                logits.rows_slot(rows.clone(), v),
                targets.into(),
                stats.into(),
            ],
            params(v, rows, bt, grad_scale),
        )
    })
}

/// [`crossentropy_backward`] with dlogits written over logits (B·T, V), as llm.c does,
/// saving a (B·T, V) buffer. Record it after everything that reads the logits.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_backward_inplace(
    s: &mut Schedule,
    ctx: &GpuContext,
    logits: &Tensor,
    targets: &Tensor,
    stats: &Tensor,
    bt: usize,
    v: usize,
    grad_scale: f32,
) -> Result<()> {
    check_v("crossentropy_backward_inplace", v)?;
    check_scale("crossentropy_backward_inplace", grad_scale)?;
    expect_numel(logits, bt * v)?;
    expect_numel(targets, bt)?;
    expect_numel(stats, STATS_LEN)?;
    expect_dtype(targets, DType::I32)?;
    if bt == 0 {
        return Ok(());
    }
    row_launches(s, ctx, &CROSSENTROPY_BACKWARD_INPLACE, bt, v, |rows| {
        let label = format!(
            "crossentropy_backward_inplace {} rows {rows:?}",
            logits.label
        );
        (
            label,
            vec![
                logits.rows_slot(rows.clone(), v),
                targets.into(),
                stats.into(),
            ],
            params(v, rows, bt, grad_scale),
        )
    })
}

// ---- chunked over the vocabulary ----

/// Invocations per workgroup (`WG` in shaders/crossentropy.wgsl); the finish kernel
/// runs one per row.
const WG: usize = 256;

/// Floats per row of the running stats the chunked loss keeps: [max, Σ exp(x - max),
/// target's logit].
pub const ROW_STATS: usize = 3;

/// Mirrors `ChunkParams` in shaders/crossentropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ChunkParams {
    v: u32,          // V: the whole vocabulary
    v0: u32,         // first vocabulary column of this chunk
    vc: u32,         // Vc: columns in this chunk (elements per row of the logits chunk)
    rows: u32,       // rows of the logits chunk in this launch
    row_offset: u32, // index among all B·T rows of the launch's first row
    bt: u32,         // B·T: rows of row_stats, losses and targets
    grad_scale: f32, // backward only: 1, or 1/K over K accumulated micro-batches
}

pub const CROSSENTROPY_CHUNK_FORWARD: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_chunk_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const CROSSENTROPY_CHUNK_FINISH: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_chunk_finish",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const CROSSENTROPY_CHUNK_BACKWARD_INPLACE: KernelDesc = KernelDesc {
    shader: &CROSSENTROPY,
    entry: "crossentropy_chunk_backward_inplace",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Error unless columns [v0, v0 + vc) are a non-empty part of a usable vocabulary `v`.
fn check_chunk(op: &str, v: usize, v0: usize, vc: usize) -> Result<()> {
    check_v(op, v)?;
    if vc == 0 || v0 + vc > v {
        return Err(Error::Invalid(format!(
            "{op}: columns {v0}..{} are not a non-empty chunk of V = {v}",
            v0 + vc
        )));
    }
    Ok(())
}

fn chunk_params(
    v: usize,
    v0: usize,
    vc: usize,
    rows: &std::ops::Range<usize>,
    bt: usize,
    grad_scale: f32,
) -> ChunkParams {
    ChunkParams {
        v: v as u32,
        v0: v0 as u32,
        vc: vc as u32,
        rows: rows.len() as u32,
        row_offset: rows.start as u32,
        bt: bt as u32,
        grad_scale,
    }
}

/// Fold the logits chunk (B·T, Vc), columns [v0, v0 + Vc) of logits (B·T, V), into
/// row_stats (B·T, [`ROW_STATS`]) = [max, Σ exp(x - max), target's logit] of each row
/// over the columns seen so far. The chunk at v0 = 0 starts the stats (overwrites them);
/// later chunks must follow in any order that ends with every column seen once. Rows
/// whose target is [`IGNORE_INDEX`] are left untouched.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_chunk_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    row_stats: &Tensor,
    logits: &Tensor,
    targets: &Tensor,
    bt: usize,
    v: usize,
    v0: usize,
    vc: usize,
) -> Result<()> {
    check_chunk("crossentropy_chunk_forward", v, v0, vc)?;
    expect_numel(row_stats, bt * ROW_STATS)?;
    expect_numel(logits, bt * vc)?;
    expect_numel(targets, bt)?;
    expect_dtype(targets, DType::I32)?;
    if bt == 0 {
        return Ok(());
    }
    row_launches(s, ctx, &CROSSENTROPY_CHUNK_FORWARD, bt, vc, |rows| {
        let label = format!(
            "crossentropy_chunk_forward {} <- {} cols {v0}..{} rows {rows:?}",
            row_stats.label,
            logits.label,
            v0 + vc
        );
        (
            label,
            vec![
                row_stats.into(),
                logits.rows_slot(rows.clone(), vc),
                targets.into(),
            ],
            chunk_params(v, v0, vc, rows, bt, 0.0),
        )
    })
}

/// losses (B·T) = (max - logit[target]) + log Σ exp(x - max) from row_stats
/// (B·T, [`ROW_STATS`]) after the last chunk: what [`crossentropy_forward`] writes for
/// the whole logits (0 where ignored, NaN for a target outside [0, V)), so
/// [`crossentropy_mean`] follows unchanged.
pub fn crossentropy_chunk_finish(
    s: &mut Schedule,
    ctx: &GpuContext,
    losses: &Tensor,
    row_stats: &Tensor,
    targets: &Tensor,
    bt: usize,
    v: usize,
) -> Result<()> {
    check_v("crossentropy_chunk_finish", v)?;
    expect_numel(losses, bt)?;
    expect_numel(row_stats, bt * ROW_STATS)?;
    expect_numel(targets, bt)?;
    expect_dtype(targets, DType::I32)?;
    if bt == 0 {
        return Ok(());
    }
    let p = chunk_params(v, 0, 0, &(0..bt), bt, 0.0);
    let label = format!(
        "crossentropy_chunk_finish {} <- {}",
        losses.label, row_stats.label
    );
    let slots = [losses.into(), row_stats.into(), targets.into()];
    s.dispatch(
        ctx,
        &CROSSENTROPY_CHUNK_FINISH,
        // One position per invocation, no reduction: the GPU width everywhere.
        &[("WG", WG as f64)],
        &label,
        &slots,
        Some(&p),
        groups_1d(bt, WG),
    )
}

/// The logits chunk (B·T, Vc), columns [v0, v0 + Vc) recomputed, becomes its dlogits in
/// place: (exp(x - max) / Σ - onehot(target)) · stats[2] · grad_scale with (max, Σ) from
/// row_stats (B·T, [`ROW_STATS`]) after the forward's last chunk and stats (4) from
/// [`crossentropy_mean`]; zero rows where ignored. Exactly the columns
/// [`crossentropy_backward_inplace`] writes for the whole logits.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_chunk_backward_inplace(
    s: &mut Schedule,
    ctx: &GpuContext,
    logits: &Tensor,
    targets: &Tensor,
    row_stats: &Tensor,
    stats: &Tensor,
    bt: usize,
    v: usize,
    v0: usize,
    vc: usize,
    grad_scale: f32,
) -> Result<()> {
    let op = "crossentropy_chunk_backward_inplace";
    check_chunk(op, v, v0, vc)?;
    check_scale(op, grad_scale)?;
    expect_numel(logits, bt * vc)?;
    expect_numel(targets, bt)?;
    expect_numel(row_stats, bt * ROW_STATS)?;
    expect_numel(stats, STATS_LEN)?;
    expect_dtype(targets, DType::I32)?;
    if bt == 0 {
        return Ok(());
    }
    row_launches(
        s,
        ctx,
        &CROSSENTROPY_CHUNK_BACKWARD_INPLACE,
        bt,
        vc,
        |rows| {
            let label = format!("{op} {} cols {v0}..{} rows {rows:?}", logits.label, v0 + vc);
            (
                label,
                vec![
                    logits.rows_slot(rows.clone(), vc),
                    targets.into(),
                    row_stats.into(),
                    stats.into(),
                ],
                chunk_params(v, v0, vc, rows, bt, grad_scale),
            )
        },
    )
}
