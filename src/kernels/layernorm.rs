//! Launchers for shaders/layernorm.wgsl: `layernorm_forward` (one launch, a workgroup
//! per row, saving mean and rstd) and `layernorm_backward` (two launches: dinp per row,
//! then dweight and dbias per block of 32 channels). Every reduction has a fixed order,
//! so results are the same bits run after run. Tensors must fit one storage binding
//! each (B·T·C·4 bytes ≤ 128 MiB by default); larger ones are refused with an error
//! naming the tensor. CPU references: `crate::reference::layernorm`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, row_reduction_lanes, shaders::LAYERNORM};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `LayernormParams` in shaders/layernorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LayernormParams {
    rows: u32, // B·T
    c: u32,    // channels
    eps: f32,  // added to the variance
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
    let label = format!(
        "layernorm_backward {}, {} <- {}",
        dweight.label, dbias.label, dout.label
    );
    let slots = [
        dweight.into(),
        dbias.into(),
        dout.into(),
        inp.into(),
        mean.into(),
        rstd.into(),
    ];
    s.dispatch(
        ctx,
        &LAYERNORM_BACKWARD_DPARAMS,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(c, DPARAMS_CHANNELS),
    )
}
