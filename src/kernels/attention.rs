//! Launchers for shaders/attention.wgsl: causal multi-head self-attention as in GPT-2.
//! `attention_forward` writes out (B, T, C) and the per-row log-sum-exp stats (B, NH, T)
//! from qkv (B, T, 3C); `attention_backward` adds into dqkv, recomputing the softmax from
//! the stats, in two launches (`attention_backward_dq`, then `attention_backward_dkv`,
//! which reads the per-row D = Σ dout·out the first one writes to a scratch tensor the
//! launcher allocates at record time). No T×T matrix is ever stored. Each launch is one
//! workgroup per (b, h, block of WG positions), WG chosen from T and HS (see
//! `workgroup_size`); head sizes up to [`MAX_HEAD_SIZE`]. Batches are split into
//! chunks when a tensor exceeds one binding. CPU references: `crate::reference::attention`.

use bytemuck::{Pod, Zeroable};

use super::matmul::{matmul_batched, Gemm, Strided};
use super::{batch_chunks, expect_numel, groups_1d, shaders::ATTENTION};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, MatmulKernel, Schedule, Tensor};

/// Mirrors `AttentionParams` in shaders/attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttentionParams {
    b: u32,     // batch rows in this launch (a chunk of B)
    t: u32,     // sequence length T
    c: u32,     // channels C = NH·HS
    nh: u32,    // heads NH
    hs: u32,    // head size HS = C / NH
    scale: f32, // 1/√HS
}

/// Most positions t of one head per workgroup; the grid is one workgroup per
/// (b, h, block of WG positions).
const MAX_WG: usize = 64;

/// Floats of one per-row workgroup array, (HS, WG) (`ROW_FLOATS` in the shader).
const ROW_FLOATS: usize = 2048;

/// Largest head size the launchers accept: the kernels keep per-row vectors in
/// workgroup memory, WG·HS ≤ ROW_FLOATS, and below 8 rows per workgroup they would
/// waste most of a GPU's SIMD width.
pub const MAX_HEAD_SIZE: usize = ROW_FLOATS / 8;

/// The workgroup size (override `WG` in the shader): `MAX_WG`, less when `t` is
/// shorter (rounded up to a power of two, so short sequences leave few invocations
/// idle), and less when `hs` is large, so that WG·HS ≤ ROW_FLOATS (a power of two).
fn workgroup_size(t: usize, hs: usize) -> usize {
    let fit = ROW_FLOATS / hs;
    let fit = 1usize << fit.ilog2(); // largest power of two ≤ fit
    t.next_power_of_two().min(MAX_WG).min(fit)
}

pub const ATTENTION_FORWARD: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const ATTENTION_BACKWARD_DQ: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_backward_dq",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const ATTENTION_BACKWARD_DKV: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_backward_dkv",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const ATTENTION_SOFTMAX_FORWARD: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_softmax_forward",
    bindings: &[Binding::ReadWrite, Binding::ReadWrite, Binding::Uniform],
};

pub const ATTENTION_SOFTMAX_BACKWARD: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_softmax_backward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// The most bytes of T×T scores (all batch rows and heads of one layer) the matmul form
/// of attention may hold; past it — long contexts — the fused, flash-style kernels run,
/// which never materialise the scores.
pub const MATMUL_FORM_MAX_SCORES: u64 = 16 << 20;

/// Whether attention runs in its matmul form: on devices whose matmuls run on the
/// subgroup kernel (CPU adapters with subgroups), when the T×T scores of every head stay
/// under [`MATMUL_FORM_MAX_SCORES`] and every operand fits one binding, and the heads fit
/// one grid dimension. Elsewhere the fused kernels run.
fn matmul_form(ctx: &GpuContext, b: usize, t: usize, c: usize, nh: usize) -> bool {
    let limit = ctx.binding_limit();
    let scores = (b * nh * t * t * 4) as u64;
    ctx.matmul_kernel() == MatmulKernel::Subgroup
        && ctx.subgroup_size().is_some()
        && scores <= limit.min(MATMUL_FORM_MAX_SCORES)
        && ((b * t * 3 * c * 4) as u64) <= limit
        && b * nh <= ctx.limits().max_compute_workgroups_per_dimension as usize
}

/// A T×T scratch tensor per (b, h) for the matmul form, made at record time (the bind
/// groups keep it alive).
fn scores(ctx: &GpuContext, label: &str, b: usize, nh: usize, t: usize) -> Result<Tensor> {
    Tensor::zeros(ctx, label, &[b, nh, t, t], DType::F32)
}

/// The per-head views the matmul form multiplies: q, k or v of qkv (B, T, 3C) at
/// channel offset `part`·C, a (B, T, C) tensor's head columns, and a (B, NH, T, T) one.
fn qkv_view(qkv: &Tensor, part: usize, t: usize, c: usize, hs: usize) -> Strided<'_> {
    Strided {
        t: qkv,
        off: part * c,
        ld: 3 * c,
        s1: t * 3 * c,
        s2: hs,
    }
}

fn heads_view(x: &Tensor, t: usize, c: usize, hs: usize) -> Strided<'_> {
    Strided {
        t: x,
        off: 0,
        ld: c,
        s1: t * c,
        s2: hs,
    }
}

fn scores_view(x: &Tensor, t: usize, nh: usize) -> Strided<'_> {
    Strided {
        t: x,
        off: 0,
        ld: t,
        s1: nh * t * t,
        s2: t * t,
    }
}

const NT: Gemm = Gemm {
    trans_a: false,
    trans_b: true,
    accumulate: false,
    a_gelu: false,
};
const NN: Gemm = Gemm {
    trans_a: false,
    trans_b: false,
    accumulate: false,
    a_gelu: false,
};
const NN_ACC: Gemm = Gemm {
    trans_a: false,
    trans_b: false,
    accumulate: true,
    a_gelu: false,
};
const TN_ACC: Gemm = Gemm {
    trans_a: true,
    trans_b: false,
    accumulate: true,
    a_gelu: false,
};

/// att (B, NH, T, T) = q·kᵀ per head, then p = softmax (saving or reading stats).
#[allow(clippy::too_many_arguments)]
fn record_probs(
    s: &mut Schedule,
    ctx: &GpuContext,
    att: &Tensor,
    stats: &Tensor,
    qkv: &Tensor,
    recompute: bool,
    (b, t, c, nh, hs): (usize, usize, usize, usize, usize),
) -> Result<()> {
    matmul_batched(
        s,
        ctx,
        NT,
        scores_view(att, t, nh),
        qkv_view(qkv, 0, t, c, hs),
        qkv_view(qkv, 1, t, c, hs),
        (b, nh),
        t,
        hs,
        t,
    )?;
    let label = format!("attention_softmax_forward {} <- {}", att.label, qkv.label);
    s.dispatch(
        ctx,
        &ATTENTION_SOFTMAX_FORWARD,
        &[("RECOMPUTE", if recompute { 1.0 } else { 0.0 })],
        &label,
        &[att.into(), stats.into()],
        Some(&params(b, t, c, nh, hs)),
        groups_1d(b * nh * t, 64),
    )
}

/// The head size C / NH, or an error naming what is wrong with (C, NH).
fn head_size(c: usize, nh: usize) -> Result<usize> {
    if nh == 0 || !c.is_multiple_of(nh) {
        return Err(Error::Invalid(format!(
            "attention: {c} channels do not split into {nh} heads"
        )));
    }
    let hs = c / nh;
    if hs == 0 || hs > MAX_HEAD_SIZE {
        return Err(Error::Invalid(format!(
            "attention: head size {hs} (C {c} / NH {nh}) is outside the supported range \
             1..={MAX_HEAD_SIZE} (MAX_HEAD_SIZE)"
        )));
    }
    Ok(hs)
}

fn params(b: usize, t: usize, c: usize, nh: usize, hs: usize) -> AttentionParams {
    AttentionParams {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        nh: nh as u32,
        hs: hs as u32,
        scale: (1.0 / (hs as f64).sqrt()) as f32,
    }
}

/// out (B, T, C), stats (B, NH, T) = causal self-attention of qkv (B, T, 3C).
/// stats holds each row's log-sum-exp of the scaled scores, for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    stats: &Tensor,
    qkv: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = head_size(c, nh)?;
    expect_numel(out, b * t * c)?;
    expect_numel(stats, b * nh * t)?;
    expect_numel(qkv, b * t * 3 * c)?;
    if b * t == 0 {
        return Ok(());
    }
    if matmul_form(ctx, b, t, c, nh) {
        let att = scores(ctx, &format!("{}.att", out.label), b, nh, t)?;
        let dims = (b, t, c, nh, hs);
        record_probs(s, ctx, &att, stats, qkv, false, dims)?;
        // out = p·v per head, written into the head's columns of out.
        return matmul_batched(
            s,
            ctx,
            NN,
            heads_view(out, t, c, hs),
            scores_view(&att, t, nh),
            qkv_view(qkv, 2, t, c, hs),
            (b, nh),
            t,
            t,
            hs,
        );
    }
    let wg = workgroup_size(t, hs);
    let constants = [("WG", wg as f64)];
    let chunks = batch_chunks(
        ctx,
        "attention",
        b,
        &[(out, t * c), (stats, nh * t), (qkv, t * 3 * c)],
    )?;
    for rows in chunks {
        let n = rows.len();
        let label = format!(
            "attention_forward {} <- {} [batch {rows:?}]",
            out.label, qkv.label
        );
        let slots = [
            out.rows_slot(rows.clone(), t * c),
            stats.rows_slot(rows.clone(), nh * t),
            qkv.rows_slot(rows.clone(), t * 3 * c),
        ];
        let p = params(n, t, c, nh, hs);
        s.dispatch(
            ctx,
            &ATTENTION_FORWARD,
            &constants,
            &label,
            &slots,
            Some(&p),
            groups_1d(n * nh * t.div_ceil(wg), 1),
        )?;
    }
    Ok(())
}

/// dqkv (B, T, 3C) += the gradient of attention_forward given dout (B, T, C), from its
/// inputs qkv, its outputs out and stats.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dqkv: &Tensor,
    dout: &Tensor,
    qkv: &Tensor,
    out: &Tensor,
    stats: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Result<()> {
    let hs = head_size(c, nh)?;
    expect_numel(dqkv, b * t * 3 * c)?;
    expect_numel(dout, b * t * c)?;
    expect_numel(qkv, b * t * 3 * c)?;
    expect_numel(out, b * t * c)?;
    expect_numel(stats, b * nh * t)?;
    if b * t == 0 {
        return Ok(());
    }
    if matmul_form(ctx, b, t, c, nh) {
        return record_backward_matmul(s, ctx, dqkv, dout, qkv, stats, (b, t, c, nh, hs));
    }
    // D_t = Σ dout·out per head row, written by the dq launch and read by the dk/dv one.
    // Made once here, at record time; the bind groups keep it alive.
    let delta = Tensor::zeros(
        ctx,
        &format!("{}.delta", stats.label),
        &[b, nh, t],
        DType::F32,
    )?;
    let wg = workgroup_size(t, hs);
    let constants = [("WG", wg as f64)];
    let chunks = batch_chunks(
        ctx,
        "attention",
        b,
        &[
            (dqkv, t * 3 * c),
            (&delta, nh * t),
            (dout, t * c),
            (qkv, t * 3 * c),
            (out, t * c),
            (stats, nh * t),
        ],
    )?;
    for rows in chunks {
        let n = rows.len();
        let p = params(n, t, c, nh, hs);
        let groups = groups_1d(n * nh * t.div_ceil(wg), 1);
        let dqkv_slot = dqkv.rows_slot(rows.clone(), t * 3 * c);
        let delta_slot = delta.rows_slot(rows.clone(), nh * t);
        let dout_slot = dout.rows_slot(rows.clone(), t * c);
        let qkv_slot = qkv.rows_slot(rows.clone(), t * 3 * c);
        let out_slot = out.rows_slot(rows.clone(), t * c);
        let stats_slot = stats.rows_slot(rows.clone(), nh * t);
        let label = format!(
            "attention_backward_dq {} <- {} [batch {rows:?}]",
            dqkv.label, dout.label
        );
        s.dispatch(
            ctx,
            &ATTENTION_BACKWARD_DQ,
            &constants,
            &label,
            &[
                dqkv_slot, delta_slot, dout_slot, qkv_slot, out_slot, stats_slot,
            ],
            Some(&p),
            groups,
        )?;
        let label = format!(
            "attention_backward_dkv {} <- {} [batch {rows:?}]",
            dqkv.label, dout.label
        );
        s.dispatch(
            ctx,
            &ATTENTION_BACKWARD_DKV,
            &constants,
            &label,
            &[dqkv_slot, dout_slot, qkv_slot, stats_slot, delta_slot],
            Some(&p),
            groups,
        )?;
    }
    Ok(())
}

/// attention_backward in the matmul form: p is rebuilt from q, k and the stats, then
/// dp = dout·vᵀ, ds·scale = softmax_backward(p, dp), and dv += pᵀ·dout,
/// dq += ds·k, dk += dsᵀ·q, each a batched product over the heads.
fn record_backward_matmul(
    s: &mut Schedule,
    ctx: &GpuContext,
    dqkv: &Tensor,
    dout: &Tensor,
    qkv: &Tensor,
    stats: &Tensor,
    dims: (usize, usize, usize, usize, usize),
) -> Result<()> {
    let (b, t, c, nh, hs) = dims;
    let att = scores(ctx, &format!("{}.att", stats.label), b, nh, t)?;
    let datt = scores(ctx, &format!("{}.datt", stats.label), b, nh, t)?;
    record_probs(s, ctx, &att, stats, qkv, true, dims)?;
    let bh = (b, nh);
    let (p, ds) = (scores_view(&att, t, nh), scores_view(&datt, t, nh));
    let dout_h = heads_view(dout, t, c, hs);
    matmul_batched(
        s,
        ctx,
        NT,
        ds,
        dout_h,
        qkv_view(qkv, 2, t, c, hs),
        bh,
        t,
        hs,
        t,
    )?;
    let label = format!("attention_softmax_backward {} <- {}", datt.label, att.label);
    s.dispatch(
        ctx,
        &ATTENTION_SOFTMAX_BACKWARD,
        &[],
        &label,
        &[(&datt).into(), (&att).into()],
        Some(&params(b, t, c, nh, hs)),
        groups_1d(b * nh * t, 64),
    )?;
    let dv = qkv_view(dqkv, 2, t, c, hs);
    matmul_batched(s, ctx, TN_ACC, dv, p, dout_h, bh, t, t, hs)?;
    let dq = qkv_view(dqkv, 0, t, c, hs);
    matmul_batched(
        s,
        ctx,
        NN_ACC,
        dq,
        ds,
        qkv_view(qkv, 1, t, c, hs),
        bh,
        t,
        t,
        hs,
    )?;
    let dk = qkv_view(dqkv, 1, t, c, hs);
    matmul_batched(
        s,
        ctx,
        TN_ACC,
        dk,
        ds,
        qkv_view(qkv, 0, t, c, hs),
        bh,
        t,
        t,
        hs,
    )
}
