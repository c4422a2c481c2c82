//! Launchers for shaders/tanh.wgsl: `tanh_forward` (out = tanh(inp), finite at any
//! input) and `tanh_backward` (dinp += dout·(1 − out²), from the forward's output as
//! torch's tanh backward), one 1-D launch each of 256-invocation workgroups. For BERT's
//! pooler. Not in place (out and inp are distinct tensors). CPU references:
//! `crate::reference::tanh`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::TANH};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `TanhParams` in shaders/tanh.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct TanhParams {
    n: u32, // elements
}

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

pub const TANH_FORWARD: KernelDesc = KernelDesc {
    shader: &TANH,
    entry: "tanh_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

pub const TANH_BACKWARD: KernelDesc = KernelDesc {
    shader: &TANH,
    entry: "tanh_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// out (N) = tanh(inp (N))
pub fn tanh_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp, n)?;
    let label = format!("tanh_forward {} <- {}", out.label, inp.label);
    let p = TanhParams { n: n as u32 };
    let slots = [out.into(), inp.into()];
    s.dispatch(
        ctx,
        &TANH_FORWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// dinp (N) += dout (N) · (1 − out²), out (N) the output of [`tanh_forward`]
pub fn tanh_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp: &Tensor,
    out: &Tensor,
    dout: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(dinp, n)?;
    expect_numel(out, n)?;
    expect_numel(dout, n)?;
    let label = format!("tanh_backward {} <- {}", dinp.label, dout.label);
    let p = TanhParams { n: n as u32 };
    let slots = [dinp.into(), out.into(), dout.into()];
    s.dispatch(
        ctx,
        &TANH_BACKWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}
