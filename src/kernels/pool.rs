//! Launchers for shaders/pool.wgsl, sentence embeddings (sentence-transformers):
//! `mean_pool_forward` (the mean of x (B, T, C) over the positions a (B, T) i32 mask
//! marks real) and `l2norm_forward` (each row of (B, C) divided by its L2 norm, torch's
//! F.normalize). Forward only: embeddings are inference. Batches are split into chunks
//! ([`batch_chunks`]) when a tensor exceeds one binding. CPU references:
//! `crate::reference::pool`.

use bytemuck::{Pod, Zeroable};

use super::{batch_chunks, expect_dtype, expect_numel, groups_1d, shaders::POOL};
use crate::error::Result;
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `MeanPoolParams` in shaders/pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MeanPoolParams {
    b: u32, // batch rows in this launch (a chunk of B)
    t: u32, // positions T
    c: u32, // channels C
}

/// Mirrors `L2normParams` in shaders/pool.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct L2normParams {
    b: u32, // rows in this launch (a chunk of B)
    c: u32, // channels C
}

/// Invocations per workgroup of `mean_pool_forward` (`POOL_WG` in the shader).
const POOL_WG: usize = 256;

/// Invocations per row of `l2norm_forward` (override `WG` in the shader): the smallest
/// power of two ≥ C, within [32, 256], as layernorm's.
fn row_workgroup(c: usize) -> f64 {
    c.next_power_of_two().clamp(32, 256) as f64
}

pub const MEAN_POOL_FORWARD: KernelDesc = KernelDesc {
    shader: &POOL,
    entry: "mean_pool_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const L2NORM_FORWARD: KernelDesc = KernelDesc {
    shader: &POOL,
    entry: "l2norm_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// out (B, C) = Σ_t mask[b,t]·x[b,t,:] / max(Σ_t mask[b,t], 1e-9) for x (B, T, C) and
/// mask (B, T) i32 (1 = real token, 0 = padding). Padding positions are skipped, and a
/// row whose mask is all 0 gives 0s.
#[allow(clippy::too_many_arguments)]
pub fn mean_pool_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    x: &Tensor,
    mask: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    expect_numel(out, b * c)?;
    expect_numel(x, b * t * c)?;
    expect_dtype(mask, DType::I32)?;
    expect_numel(mask, b * t)?;
    if b * c == 0 {
        return Ok(());
    }
    let per_batch = [(out, c), (x, t * c), (mask, t)];
    for rows in batch_chunks(ctx, "mean_pool_forward", b, &per_batch)? {
        let n = rows.len();
        let label = format!(
            "mean_pool_forward {} <- {}, {} [batch {rows:?}]",
            out.label, x.label, mask.label
        );
        let p = MeanPoolParams {
            b: n as u32,
            t: t as u32,
            c: c as u32,
        };
        let slots = [
            out.rows_slot(rows.clone(), c),
            x.rows_slot(rows.clone(), t * c),
            mask.rows_slot(rows.clone(), t),
        ];
        s.dispatch(
            ctx,
            &MEAN_POOL_FORWARD,
            &[],
            &label,
            &slots,
            Some(&p),
            groups_1d(n * c, POOL_WG),
        )?;
    }
    Ok(())
}

/// out (B, C) = x / max(‖x‖₂, 1e-12) per row of x (B, C)   (torch F.normalize)
pub fn l2norm_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    x: &Tensor,
    b: usize,
    c: usize,
) -> Result<()> {
    expect_numel(out, b * c)?;
    expect_numel(x, b * c)?;
    if b * c == 0 {
        return Ok(());
    }
    let constants = [("WG", row_workgroup(c))];
    for rows in batch_chunks(ctx, "l2norm_forward", b, &[(out, c), (x, c)])? {
        let n = rows.len();
        let label = format!(
            "l2norm_forward {} <- {} [batch {rows:?}]",
            out.label, x.label
        );
        let p = L2normParams {
            b: n as u32,
            c: c as u32,
        };
        let slots = [out.rows_slot(rows.clone(), c), x.rows_slot(rows, c)];
        s.dispatch(
            ctx,
            &L2NORM_FORWARD,
            &constants,
            &label,
            &slots,
            Some(&p),
            groups_1d(n, 1),
        )?;
    }
    Ok(())
}
