//! Launchers for shaders/attention.wgsl: causal multi-head self-attention as in GPT-2.
//! `attention_forward` writes out (B, T, C) and the per-row log-sum-exp stats (B, NH, T)
//! from qkv (B, T, 3C); `attention_backward` adds into dqkv, recomputing the softmax from
//! the stats, in two launches (`attention_backward_dq`, then `attention_backward_dkv`,
//! which reads the per-row D = Σ dout·out the first one writes to a scratch tensor the
//! launcher allocates at record time). No T×T matrix is ever stored. Each launch is one
//! workgroup per (b, h, block of WG positions), WG chosen from T and HS (see
//! `workgroup_size`); head sizes up to [`MAX_HEAD_SIZE`]. Batches are split into
//! chunks when a tensor exceeds one binding.
//! On CPU adapters and GPUs with subgroups, where those kernels are slow, attention
//! runs instead in its matmul form: per (batch row, head), scores = q·kᵀ and out = p·v
//! as batched matmuls (`matmul_batched`: the subgroup kernel on CPU adapters, the tiled
//! one on GPUs) around a softmax kernel ([`SoftmaxRows`]), over slices of the
//! (row, head) grid whose T×T scores fit [`matmul_form_max_scores`] ([`attention_slices`],
//! [`matmul_form_family`]); the backward rebuilds p from the stats slice by slice.
//! CPU references: `crate::reference::attention`.

use bytemuck::{Pod, Zeroable};

use super::matmul::{matmul_batched, Gemm, Strided};
use super::{batch_chunks, expect_numel, groups_1d, shaders::ATTENTION};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, MatmulKernel, Schedule, Slot, Tensor};

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

pub const ATTENTION_SOFTMAX_FORWARD_ROWS: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_softmax_forward_rows",
    bindings: &[Binding::ReadWrite, Binding::ReadWrite, Binding::Uniform],
};

pub const ATTENTION_SOFTMAX_BACKWARD_ROWS: KernelDesc = KernelDesc {
    shader: &ATTENTION,
    entry: "attention_softmax_backward_rows",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// How the matmul form's softmax kernels cover the rows of the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxRows {
    /// One invocation per row (`attention_softmax_forward`/`_backward`): no barriers, for
    /// CPU adapters.
    PerInvocation,
    /// One workgroup per row (the `_rows` entries): neighbouring invocations read
    /// neighbouring scores, for GPUs. On an H200 (2026-11-30) the per-invocation kernels
    /// took 0.64 ms a slice of 24 heads at T = 1024, a sixth of the GPU's bandwidth.
    PerWorkgroup,
}

impl SoftmaxRows {
    /// The kernels for `ctx`'s adapter.
    pub fn for_adapter(ctx: &GpuContext) -> Self {
        if ctx.is_cpu() {
            SoftmaxRows::PerInvocation
        } else {
            SoftmaxRows::PerWorkgroup
        }
    }
}

/// p = softmax(att · scale) per row of the scores att (heads, T, T), in place, causal
/// (zero past column t of row t): the matmul form's softmax. L = log Σ exp is written to
/// stats (heads, T) or, with `recompute` (the backward rebuilding p), read from it.
#[allow(clippy::too_many_arguments)]
pub fn attention_softmax_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    kernel: SoftmaxRows,
    att: Slot,
    stats: Slot,
    heads: usize,
    t: usize,
    hs: usize,
    recompute: bool,
    label: &str,
) -> Result<()> {
    let (desc, groups) = match kernel {
        SoftmaxRows::PerInvocation => (&ATTENTION_SOFTMAX_FORWARD, groups_1d(heads * t, 64)),
        SoftmaxRows::PerWorkgroup => (&ATTENTION_SOFTMAX_FORWARD_ROWS, groups_1d(heads * t, 1)),
    };
    s.dispatch(
        ctx,
        desc,
        &[("RECOMPUTE", if recompute { 1.0 } else { 0.0 })],
        label,
        &[att, stats],
        Some(&params(1, t, hs * heads, heads, hs)),
        groups,
    )
}

/// datt (heads, T, T) = dp → ds·scale = p (dp − D)·scale per row, D = Σ p·dp, causal:
/// the backward of [`attention_softmax_forward`], in place on datt; p is att.
#[allow(clippy::too_many_arguments)]
pub fn attention_softmax_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    kernel: SoftmaxRows,
    datt: Slot,
    att: Slot,
    heads: usize,
    t: usize,
    hs: usize,
    label: &str,
) -> Result<()> {
    let (desc, groups) = match kernel {
        SoftmaxRows::PerInvocation => (&ATTENTION_SOFTMAX_BACKWARD, groups_1d(heads * t, 64)),
        SoftmaxRows::PerWorkgroup => (&ATTENTION_SOFTMAX_BACKWARD_ROWS, groups_1d(heads * t, 1)),
    };
    s.dispatch(
        ctx,
        desc,
        &[],
        label,
        &[datt, att],
        Some(&params(1, t, hs * heads, heads, hs)),
        groups,
    )
}

/// The most bytes of T×T scores the matmul form of attention holds at once: the scores
/// of one slice of (batch rows, heads). Longer contexts take more slices, one after
/// another through the same scratch; past one head's T×T (T > 2048) the fused,
/// flash-style kernels run, which never materialise the scores.
pub const MATMUL_FORM_MAX_SCORES: u64 = 16 << 20;

/// The same bound on a GPU, where memory is faster and a launch wants many heads to fill
/// the device: at GPT-2's T = 1024, 32 heads a slice.
pub const MATMUL_FORM_MAX_SCORES_GPU: u64 = 128 << 20;

/// A slice of the (batch row, head) grid the matmul form works on at once: `nb` batch
/// rows from `b0` with every head, or (`nb` = 1) heads `h0..h0 + nh` of row `b0`, so the
/// slice's stats rows (b·NH + h) are contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionSlice {
    pub b0: usize,
    pub nb: usize,
    pub h0: usize,
    pub nh: usize,
}

/// The slices attention's matmul form runs in, or `None` where the fused kernels run.
/// The matmul form runs where [`matmul_form_family`] says: on CPU adapters whose matmuls
/// run on the subgroup kernel, where it is about 10x faster than the fused kernels, and
/// on GPUs with subgroups (on an H200 the fused kernels took 83 % of a GPT-2 step at
/// B=4, T=1024, at about 0.2 TFLOP/s, 2026-11-30); and when
/// qkv fits one binding, the heads fit one grid dimension and one head's T×T scores fit
/// [`matmul_form_max_scores`]. A slice is as many whole batch rows as fit, or, when one
/// row's heads do not, groups of a row's heads; every slice's stats must start on a
/// binding-offset boundary (T·4 bytes a head row), else the fused kernels run.
pub fn attention_slices(
    ctx: &GpuContext,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Option<Vec<AttentionSlice>> {
    let limit = ctx.binding_limit();
    let head = (t * t * 4) as u64;
    let fits = (limit.min(matmul_form_max_scores(ctx)) / head.max(1)) as usize;
    let usable = matmul_form_family(ctx)
        && fits >= 1
        && ((b * t * 3 * c * 4) as u64) <= limit
        && b * nh <= ctx.limits().max_compute_workgroups_per_dimension as usize;
    if !usable || b * nh == 0 {
        return usable.then(Vec::new);
    }
    let mut slices = Vec::new();
    if fits >= nh {
        let rows = fits / nh;
        for b0 in (0..b).step_by(rows) {
            let nb = rows.min(b - b0);
            slices.push(AttentionSlice { b0, nb, h0: 0, nh });
        }
    } else {
        for b0 in 0..b {
            for h0 in (0..nh).step_by(fits) {
                let n = fits.min(nh - h0);
                slices.push(AttentionSlice {
                    b0,
                    nb: 1,
                    h0,
                    nh: n,
                });
            }
        }
    }
    let align = ctx.limits().min_storage_buffer_offset_alignment as usize;
    let aligned = slices
        .iter()
        .all(|sl| ((sl.b0 * nh + sl.h0) * t * 4).is_multiple_of(align));
    aligned.then_some(slices)
}

/// Whether `ctx` runs attention in its matmul form where the sizes allow: devices with
/// subgroups whose matmuls run on the subgroup kernel (CPU adapters) or, on a GPU, on the
/// tiled kernel, which `matmul_batched` then uses. A GPU without fixed-size subgroups
/// keeps the fused kernels: that includes every adapter in a browser (no subgroups
/// there), where wgpu reports a device type of `Other` unless the browser marks the
/// adapter a fallback one, so a software adapter such as SwiftShader may count as a GPU;
/// the matmul form has not been measured there. A context on the rows kernel keeps the
/// fused kernels (tests use one to run them on every adapter).
pub fn matmul_form_family(ctx: &GpuContext) -> bool {
    let family = match ctx.matmul_kernel() {
        MatmulKernel::Subgroup => true,
        MatmulKernel::Tiled => !ctx.is_cpu(),
        _ => false,
    };
    family && ctx.subgroup_size().is_some()
}

/// The most bytes of scores one slice of the matmul form holds on `ctx`.
pub fn matmul_form_max_scores(ctx: &GpuContext) -> u64 {
    if ctx.is_cpu() {
        MATMUL_FORM_MAX_SCORES
    } else {
        MATMUL_FORM_MAX_SCORES_GPU
    }
}

/// A T×T scratch tensor per (b, h) of the largest slice, made at record time (the bind
/// groups keep it alive) and reused by every slice.
fn scores(ctx: &GpuContext, label: &str, slices: &[AttentionSlice], t: usize) -> Result<Tensor> {
    let heads = slices.iter().map(|sl| sl.nb * sl.nh).max().unwrap_or(1);
    Tensor::zeros(ctx, label, &[heads, t, t], DType::F32)
}

/// The per-head views the matmul form multiplies, for the heads of slice `sl`: q, k or
/// v of qkv (B, T, 3C) at channel offset `part`·C, a (B, T, C) tensor's head columns,
/// and the slice's scores (nb, nh, T, T) in the scratch.
fn qkv_view(
    qkv: &Tensor,
    sl: AttentionSlice,
    part: usize,
    t: usize,
    c: usize,
    hs: usize,
) -> Strided<'_> {
    Strided {
        t: qkv,
        off: sl.b0 * t * 3 * c + part * c + sl.h0 * hs,
        ld: 3 * c,
        s1: t * 3 * c,
        s2: hs,
    }
}

fn heads_view(x: &Tensor, sl: AttentionSlice, t: usize, c: usize, hs: usize) -> Strided<'_> {
    Strided {
        t: x,
        off: sl.b0 * t * c + sl.h0 * hs,
        ld: c,
        s1: t * c,
        s2: hs,
    }
}

fn scores_view(x: &Tensor, sl: AttentionSlice, t: usize) -> Strided<'_> {
    Strided {
        t: x,
        off: 0,
        ld: t,
        s1: sl.nh * t * t,
        s2: t * t,
    }
}

/// The slice's rows (b·NH + h) of stats (B, NH, T), bound on their own.
fn stats_slot(stats: &Tensor, sl: AttentionSlice, nh: usize, t: usize) -> Slot<'_> {
    let r0 = sl.b0 * nh + sl.h0;
    stats.rows_slot(r0..r0 + sl.nb * sl.nh, t)
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

/// att (nb, nh, T, T) = q·kᵀ per head of slice `sl`, then p = softmax (saving or reading
/// the slice's stats).
#[allow(clippy::too_many_arguments)]
fn record_probs(
    s: &mut Schedule,
    ctx: &GpuContext,
    att: &Tensor,
    stats: &Tensor,
    qkv: &Tensor,
    recompute: bool,
    sl: AttentionSlice,
    (_b, t, c, nh, hs): (usize, usize, usize, usize, usize),
) -> Result<()> {
    matmul_batched(
        s,
        ctx,
        NT,
        scores_view(att, sl, t),
        qkv_view(qkv, sl, 0, t, c, hs),
        qkv_view(qkv, sl, 1, t, c, hs),
        (sl.nb, sl.nh),
        t,
        hs,
        t,
    )?;
    let label = format!(
        "attention_softmax_forward {} <- {} {}",
        att.label,
        qkv.label,
        slice_label(sl)
    );
    attention_softmax_forward(
        s,
        ctx,
        SoftmaxRows::for_adapter(ctx),
        att.rows_slot(0..sl.nb * sl.nh, t * t),
        stats_slot(stats, sl, nh, t),
        sl.nb * sl.nh,
        t,
        hs,
        recompute,
        &label,
    )
}

/// "[rows 0..2, heads 0..12]": which slice a launch works on.
fn slice_label(sl: AttentionSlice) -> String {
    format!(
        "[rows {}..{}, heads {}..{}]",
        sl.b0,
        sl.b0 + sl.nb,
        sl.h0,
        sl.h0 + sl.nh
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
    if let Some(slices) = attention_slices(ctx, b, t, c, nh) {
        let att = scores(ctx, &format!("{}.att", out.label), &slices, t)?;
        let dims = (b, t, c, nh, hs);
        for sl in slices {
            record_probs(s, ctx, &att, stats, qkv, false, sl, dims)?;
            // out = p·v per head, written into the head's columns of out.
            matmul_batched(
                s,
                ctx,
                NN,
                heads_view(out, sl, t, c, hs),
                scores_view(&att, sl, t),
                qkv_view(qkv, sl, 2, t, c, hs),
                (sl.nb, sl.nh),
                t,
                t,
                hs,
            )?;
        }
        return Ok(());
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
    if let Some(slices) = attention_slices(ctx, b, t, c, nh) {
        let dims = (b, t, c, nh, hs);
        return record_backward_matmul(s, ctx, dqkv, dout, qkv, stats, &slices, dims);
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

/// attention_backward in the matmul form, slice by slice: p is rebuilt from q, k and the
/// stats, then dp = dout·vᵀ, ds·scale = softmax_backward(p, dp), and dv += pᵀ·dout,
/// dq += ds·k, dk += dsᵀ·q, each a batched product over the slice's heads.
#[allow(clippy::too_many_arguments)]
fn record_backward_matmul(
    s: &mut Schedule,
    ctx: &GpuContext,
    dqkv: &Tensor,
    dout: &Tensor,
    qkv: &Tensor,
    stats: &Tensor,
    slices: &[AttentionSlice],
    dims: (usize, usize, usize, usize, usize),
) -> Result<()> {
    let (_, t, c, _, hs) = dims;
    let att = scores(ctx, &format!("{}.att", stats.label), slices, t)?;
    let datt = scores(ctx, &format!("{}.datt", stats.label), slices, t)?;
    for &sl in slices {
        record_probs(s, ctx, &att, stats, qkv, true, sl, dims)?;
        let bh = (sl.nb, sl.nh);
        let (p, ds) = (scores_view(&att, sl, t), scores_view(&datt, sl, t));
        let dout_h = heads_view(dout, sl, t, c, hs);
        let v = qkv_view(qkv, sl, 2, t, c, hs);
        matmul_batched(s, ctx, NT, ds, dout_h, v, bh, t, hs, t)?;
        let label = format!(
            "attention_softmax_backward {} <- {} {}",
            datt.label,
            att.label,
            slice_label(sl)
        );
        let heads = sl.nb * sl.nh;
        attention_softmax_backward(
            s,
            ctx,
            SoftmaxRows::for_adapter(ctx),
            datt.rows_slot(0..heads, t * t),
            att.rows_slot(0..heads, t * t),
            heads,
            t,
            hs,
            &label,
        )?;
        let dv = qkv_view(dqkv, sl, 2, t, c, hs);
        matmul_batched(s, ctx, TN_ACC, dv, p, dout_h, bh, t, t, hs)?;
        let dq = qkv_view(dqkv, sl, 0, t, c, hs);
        let k = qkv_view(qkv, sl, 1, t, c, hs);
        matmul_batched(s, ctx, NN_ACC, dq, ds, k, bh, t, t, hs)?;
        let dk = qkv_view(dqkv, sl, 1, t, c, hs);
        let q = qkv_view(qkv, sl, 0, t, c, hs);
        matmul_batched(s, ctx, TN_ACC, dk, ds, q, bh, t, t, hs)?;
    }
    Ok(())
}
