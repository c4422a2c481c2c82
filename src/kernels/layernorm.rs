//! Launchers for shaders/layernorm.wgsl: `layernorm_forward` (one launch, a workgroup
//! per row, saving mean and rstd) and `layernorm_backward` (two launches: dinp per row,
//! then dweight and dbias per block of 32 channels); and the same fused with the
//! residual add before them, `residual_layernorm_forward` (res = x + sub, out =
//! norm(res): one launch where residual_forward + layernorm_forward take two) and
//! `residual_layernorm_backward` (dres += norm'(dout), dx += dres, dsub += dres: two
//! launches where layernorm_backward + residual_backward take three), which give the
//! same bits as the unfused kernels. Every reduction has a fixed order, so results are
//! the same bits run after run. Tensors must fit one storage binding each (B·T·C·4
//! bytes ≤ 128 MiB by default); larger ones are refused with an error naming the
//! tensor. CPU references: `crate::reference::layernorm`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, row_reduction_lanes, shaders::LAYERNORM};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};
use crate::kernels::matmul::{bias_slab_rows, matmul_backward_bias};

/// Mirrors `LayernormParams` in shaders/layernorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LayernormParams {
    rows: u32,   // B·T
    c: u32,      // channels
    eps: f32,    // added to the variance
    slab: u32,   // layernorm_backward_dparams: rows per slab
    direct: u32, // layernorm_backward_dparams: 1: add into dweight, dbias; 0: partials
}

pub const LAYERNORM_FORWARD: KernelDesc = KernelDesc {
    shader: &LAYERNORM,
    entry: "layernorm_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const RESIDUAL_LAYERNORM_FORWARD: KernelDesc = KernelDesc {
    shader: &LAYERNORM,
    entry: "residual_layernorm_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const LAYERNORM_BACKWARD_DINP: KernelDesc = KernelDesc {
    shader: &LAYERNORM,
    entry: "layernorm_backward_dinp",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const RESIDUAL_LAYERNORM_BACKWARD_DINP: KernelDesc = KernelDesc {
    shader: &LAYERNORM,
    entry: "residual_layernorm_backward_dinp",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const LAYERNORM_BACKWARD_DPARAMS: KernelDesc = KernelDesc {
    shader: &LAYERNORM,
    entry: "layernorm_backward_dparams",
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

/// Channels per workgroup of `layernorm_backward_dparams` (`CHANNELS` in the shader).
const DPARAMS_CHANNELS: usize = 32;

/// Invocations per row (`WG` in the shader): on a GPU the smallest power of two ≥ C,
/// within [32, 256], so narrow rows do not leave most of a workgroup idle; on a CPU
/// adapter [`row_reduction_lanes`]'s (lavapipe, 768 rows of 128: forward 47 → 6.5 ms,
/// backward 40 → 14 ms).
fn row_workgroup(ctx: &GpuContext, c: usize) -> f64 {
    row_reduction_lanes(ctx, c.next_power_of_two().clamp(32, 256))
}

fn params(b: usize, t: usize, c: usize, eps: f32) -> LayernormParams {
    LayernormParams {
        rows: (b * t) as u32,
        c: c as u32,
        eps,
        slab: 0,
        direct: 1,
    }
}

/// out (B, T, C) = (inp − mean)·rstd·weight (C) + bias (C), per row of inp (B, T, C);
/// saves mean (B, T) and rstd (B, T) = 1/√(var + eps) for the backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    expect_numel(out, b * t * c)?;
    expect_numel(mean, b * t)?;
    expect_numel(rstd, b * t)?;
    expect_numel(inp, b * t * c)?;
    expect_numel(weight, c)?;
    expect_numel(bias, c)?;
    let label = format!("layernorm_forward {} <- {}", out.label, inp.label);
    let slots = [
        out.into(),
        mean.into(),
        rstd.into(),
        inp.into(),
        weight.into(),
        bias.into(),
    ];
    let p = params(b, t, c, eps);
    s.dispatch(
        ctx,
        &LAYERNORM_FORWARD,
        &[("WG", row_workgroup(ctx, c))],
        &label,
        &slots,
        Some(&p),
        groups_1d(b * t, 1),
    )
}

/// res (B, T, C) = x (B, T, C) + sub (B, T, C), then [`layernorm_forward`] of res into
/// out (B, T, C), mean (B, T), rstd (B, T): one launch, the same bits as
/// `residual_forward` followed by `layernorm_forward`.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    res: &Tensor,
    out: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    x: &Tensor,
    sub: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    eps: f32,
) -> Result<()> {
    expect_numel(res, b * t * c)?;
    expect_numel(out, b * t * c)?;
    expect_numel(mean, b * t)?;
    expect_numel(rstd, b * t)?;
    expect_numel(x, b * t * c)?;
    expect_numel(sub, b * t * c)?;
    expect_numel(weight, c)?;
    expect_numel(bias, c)?;
    let label = format!(
        "residual_layernorm_forward {}, {} <- {} + {}",
        res.label, out.label, x.label, sub.label
    );
    let slots = [
        res.into(),
        out.into(),
        mean.into(),
        rstd.into(),
        x.into(),
        sub.into(),
        weight.into(),
        bias.into(),
    ];
    let p = params(b, t, c, eps);
    s.dispatch(
        ctx,
        &RESIDUAL_LAYERNORM_FORWARD,
        &[("WG", row_workgroup(ctx, c))],
        &label,
        &slots,
        Some(&p),
        groups_1d(b * t, 1),
    )
}

/// dinp (B, T, C), dweight (C), dbias (C) += the gradients of layernorm_forward, from
/// dout (B, T, C) and the forward's inp, weight and saved mean, rstd (B, T).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    expect_numel(dinp, b * t * c)?;
    expect_numel(dweight, c)?;
    expect_numel(dbias, c)?;
    expect_numel(dout, b * t * c)?;
    expect_numel(inp, b * t * c)?;
    expect_numel(weight, c)?;
    expect_numel(mean, b * t)?;
    expect_numel(rstd, b * t)?;
    let p = params(b, t, c, 0.0);
    let label = format!("layernorm_backward {} <- {}", dinp.label, dout.label);
    let slots = [
        dinp.into(),
        dout.into(),
        inp.into(),
        weight.into(),
        mean.into(),
        rstd.into(),
    ];
    s.dispatch(
        ctx,
        &LAYERNORM_BACKWARD_DINP,
        &[("WG", row_workgroup(ctx, c))],
        &label,
        &slots,
        Some(&p),
        groups_1d(b * t, 1),
    )?;
    dparams(s, ctx, dweight, dbias, dout, inp, mean, rstd, &p)
}

/// dres (B, T, C) += the layernorm gradient from dout (B, T, C), as [`layernorm_backward`]
/// adds into its dinp; then dx (B, T, C) += dres and dsub (B, T, C) += dres, the
/// backward of res = x + sub; dweight (C), dbias (C) += theirs. res, weight, mean and
/// rstd are the forward's. dres comes in with what the rest of the graph has added to
/// res's gradient and leaves with all of it. Two launches, the same bits as
/// `layernorm_backward` into dres followed by `residual_backward(dx, dsub, dres)`.
/// dx, dsub and dres must be distinct tensors.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    dsub: &Tensor,
    dres: &Tensor,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    res: &Tensor,
    weight: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    expect_numel(dx, b * t * c)?;
    expect_numel(dsub, b * t * c)?;
    expect_numel(dres, b * t * c)?;
    expect_numel(dweight, c)?;
    expect_numel(dbias, c)?;
    expect_numel(dout, b * t * c)?;
    expect_numel(res, b * t * c)?;
    expect_numel(weight, c)?;
    expect_numel(mean, b * t)?;
    expect_numel(rstd, b * t)?;
    let p = params(b, t, c, 0.0);
    let label = format!(
        "residual_layernorm_backward {}, {}, {} <- {}",
        dx.label, dsub.label, dres.label, dout.label
    );
    let slots = [
        dx.into(),
        dsub.into(),
        dres.into(),
        dout.into(),
        res.into(),
        weight.into(),
        mean.into(),
        rstd.into(),
    ];
    s.dispatch(
        ctx,
        &RESIDUAL_LAYERNORM_BACKWARD_DINP,
        &[("WG", row_workgroup(ctx, c))],
        &label,
        &slots,
        Some(&p),
        groups_1d(b * t, 1),
    )?;
    dparams(s, ctx, dweight, dbias, dout, res, mean, rstd, &p)
}

/// The second launch of both backwards: dweight (C), dbias (C) += Σ over rows of
/// norm(inp)·dout and dout (B, T, C), in slabs of [`bias_slab_rows`] rows, as
/// `matmul_backward_bias` sums; with more than one slab, the slabs' sums go to two
/// scratch (S, C) tensors that `matmul_backward_bias` adds into dweight and dbias.
#[allow(clippy::too_many_arguments)]
fn dparams(
    s: &mut Schedule,
    ctx: &GpuContext,
    dweight: &Tensor,
    dbias: &Tensor,
    dout: &Tensor,
    inp: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    p: &LayernormParams,
) -> Result<()> {
    let (rows, c) = (p.rows as usize, p.c as usize);
    let slab = bias_slab_rows(rows);
    let slabs = rows.div_ceil(slab).max(1);
    let label = format!(
        "layernorm_backward {}, {} <- {}",
        dweight.label, dbias.label, dout.label
    );
    let p = LayernormParams {
        slab: slab as u32,
        direct: (slabs == 1) as u32,
        ..*p
    };
    let groups = [c.div_ceil(DPARAMS_CHANNELS) as u32, slabs as u32, 1];
    if slabs == 1 {
        let slots = [
            dweight.into(),
            dbias.into(),
            dout.into(),
            inp.into(),
            mean.into(),
            rstd.into(),
        ];
        return s.dispatch(
            ctx,
            &LAYERNORM_BACKWARD_DPARAMS,
            &[],
            &label,
            &slots,
            Some(&p),
            groups,
        );
    }
    let pw = ctx.scratch("layernorm_backward dweight partials", &[slabs, c])?;
    let pb = ctx.scratch("layernorm_backward dbias partials", &[slabs, c])?;
    let slots = [
        pw.rows_slot(0..slabs, c),
        pb.rows_slot(0..slabs, c),
        dout.into(),
        inp.into(),
        mean.into(),
        rstd.into(),
    ];
    s.dispatch(
        ctx,
        &LAYERNORM_BACKWARD_DPARAMS,
        &[],
        &format!("{label} slabs 0..{slabs}"),
        &slots,
        Some(&p),
        groups,
    )?;
    matmul_backward_bias(s, ctx, dweight, &pw, slabs, c)?;
    matmul_backward_bias(s, ctx, dbias, &pb, slabs, c)
}
