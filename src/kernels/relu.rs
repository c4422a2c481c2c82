//! Launchers for shaders/relu.wgsl: `relu_forward` (out = max(inp, 0)) and
//! `relu_backward` (dinp += dout where inp > 0, torch's gradient 0 at 0), one 1-D launch
//! each of 256-invocation workgroups. Not in place (out and inp are distinct tensors, as
//! for gelu). CPU references: `crate::reference::relu`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::RELU};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `ReluParams` in shaders/relu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReluParams {
    n: u32, // elements
}

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

pub const RELU_FORWARD: KernelDesc = KernelDesc {
    shader: &RELU,
    entry: "relu_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

pub const RELU_BACKWARD: KernelDesc = KernelDesc {
    shader: &RELU,
    entry: "relu_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// out (N) = max(inp (N), 0)
pub fn relu_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp, n)?;
    let label = format!("relu_forward {} <- {}", out.label, inp.label);
    let p = ReluParams { n: n as u32 };
    let slots = [out.into(), inp.into()];
    s.dispatch(
        ctx,
        &RELU_FORWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// dinp (N) += dout (N) · [inp (N) > 0]
pub fn relu_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp: &Tensor,
    inp: &Tensor,
    dout: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(dinp, n)?;
    expect_numel(inp, n)?;
    expect_numel(dout, n)?;
    let label = format!("relu_backward {} <- {}", dinp.label, dout.label);
    let p = ReluParams { n: n as u32 };
    let slots = [dinp.into(), inp.into(), dout.into()];
    s.dispatch(
        ctx,
        &RELU_BACKWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}
