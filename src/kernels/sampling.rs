//! Launchers for shaders/sampling.wgsl: what generation needs from the last position's
//! logits (B, V): `softmax_forward` (probabilities at a temperature), `argmax_forward`
//! (greedy decoding) and `topk_forward` (the K best, sorted, for top-k sampling). Ties go
//! to the lowest index; results are deterministic. Drawing a token from the
//! probabilities is left to the caller (it reads back B·K or B·V values, never more).
//! Rows are processed in chunks that fit one binding, so any B works at V = 50257.
//! CPU references: `crate::reference::sampling`.

use bytemuck::{Pod, Zeroable};

use super::crossentropy::expect_dtype;
use super::{expect_numel, groups_1d, shaders::SAMPLING};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Largest K `topk_forward` takes. The kernel runs K rounds per row (each a tree over the
/// workgroup plus a rescan of V / 256 columns by one invocation), so the bound is one of
/// launch time, not memory.
pub const TOPK_MAX_K: usize = 1024;

/// Mirrors `SamplingParams` in shaders/sampling.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SamplingParams {
    v: u32,           // V: elements per row of logits
    rows: u32,        // rows of logits in this launch's chunk
    row_offset: u32,  // index among all B rows of the chunk's first row
    k: u32,           // K: entries per row of topk_forward's outputs
    temperature: f32, // softmax_forward divides logits by it
}

pub const SOFTMAX_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "softmax_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const ARGMAX_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "argmax_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const TOPK_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "topk_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Error unless `v` is a usable row length (1..2³²).
fn check_v(op: &str, v: usize) -> Result<()> {
    if v == 0 || v >= u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{op}: V = {v} must be in 1..2^32-1"
        )));
    }
    Ok(())
}

/// probs (B, V) = softmax(logits (B, V) / temperature) per row; temperature > 0.
pub fn softmax_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    probs: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
    temperature: f32,
) -> Result<()> {
    check_v("softmax_forward", v)?;
    expect_numel(probs, b * v)?;
    expect_numel(logits, b * v)?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Invalid(format!(
            "softmax_forward: temperature {temperature} must be finite and > 0"
        )));
    }
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: 0,
            temperature,
        };
        let label = format!(
            "softmax_forward {} <- {} rows {rows:?}",
            probs.label, logits.label
        );
        let slots = [
            probs.rows_slot(rows.clone(), v),
            logits.rows_slot(rows.clone(), v),
        ];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &SOFTMAX_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// indices (B) u32 = the column of each row's largest logit (B, V); ties to the lowest.
pub fn argmax_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    indices: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
) -> Result<()> {
    check_v("argmax_forward", v)?;
    expect_numel(indices, b)?;
    expect_numel(logits, b * v)?;
    expect_dtype(indices, DType::U32)?;
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: 0,
            temperature: 1.0,
        };
        let label = format!(
            "argmax_forward {} <- {} rows {rows:?}",
            indices.label, logits.label
        );
        let slots = [indices.into(), logits.rows_slot(rows.clone(), v)];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &ARGMAX_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// values (B, K), indices (B, K) u32 = each row's K largest logits (B, V) and their
/// columns, sorted descending; equal values in increasing column order.
/// 1 <= K <= min(V, [`TOPK_MAX_K`]).
#[allow(clippy::too_many_arguments)]
pub fn topk_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    values: &Tensor,
    indices: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
    k: usize,
) -> Result<()> {
    check_v("topk_forward", v)?;
    if k == 0 || k > v || k > TOPK_MAX_K {
        return Err(Error::Invalid(format!(
            "topk_forward: K = {k} must be in 1..={} (V = {v}, TOPK_MAX_K = {TOPK_MAX_K})",
            v.min(TOPK_MAX_K)
        )));
    }
    expect_numel(values, b * k)?;
    expect_numel(indices, b * k)?;
    expect_numel(logits, b * v)?;
    expect_dtype(indices, DType::U32)?;
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: k as u32,
            temperature: 1.0,
        };
        let label = format!(
            "topk_forward {}, {} <- {} rows {rows:?}",
            values.label, indices.label, logits.label
        );
        let slots = [
            values.into(),
            indices.into(),
            logits.rows_slot(rows.clone(), v),
        ];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &TOPK_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}
