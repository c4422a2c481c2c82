//! Launchers for shaders/residual.wgsl: `residual_forward` (out = inp1 + inp2) and
//! `residual_backward` (dinp1 += dout, dinp2 += dout), one 1-D launch each of
//! 256-invocation workgroups. The two gradients must be distinct tensors (wgpu refuses
//! one buffer bound twice for writing). CPU references: `crate::reference::residual`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::RESIDUAL};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `ResidualParams` in shaders/residual.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ResidualParams {
    n: u32, // elements (B·T·C)
}

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

pub const RESIDUAL_FORWARD: KernelDesc = KernelDesc {
    shader: &RESIDUAL,
    entry: "residual_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const RESIDUAL_BACKWARD: KernelDesc = KernelDesc {
    shader: &RESIDUAL,
    entry: "residual_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Uniform,
    ],
};

fn params(n: usize) -> ResidualParams {
    ResidualParams { n: n as u32 }
}

/// out (N) = inp1 (N) + inp2 (N)
pub fn residual_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp1: &Tensor,
    inp2: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp1, n)?;
    expect_numel(inp2, n)?;
    let label = format!(
        "residual_forward {} <- {} + {}",
        out.label, inp1.label, inp2.label
    );
    let slots = [out.into(), inp1.into(), inp2.into()];
    let p = params(n);
    s.dispatch(
        ctx,
        &RESIDUAL_FORWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// dinp1 (N) += dout (N); dinp2 (N) += dout (N)
pub fn residual_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp1: &Tensor,
    dinp2: &Tensor,
    dout: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(dinp1, n)?;
    expect_numel(dinp2, n)?;
    expect_numel(dout, n)?;
    let label = format!(
        "residual_backward {}, {} <- {}",
        dinp1.label, dinp2.label, dout.label
    );
    let slots = [dinp1.into(), dinp2.into(), dout.into()];
    let p = params(n);
    s.dispatch(
        ctx,
        &RESIDUAL_BACKWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}
