//! Launchers for shaders/gelu.wgsl: `gelu_forward` (out = gelu(inp), tanh approximation,
//! GPT-2) and `gelu_backward` (dinp += gelu'(inp)·dout), and their exact-erf twins
//! `gelu_erf_forward` (out = inp·Φ(inp), BERT) and `gelu_erf_backward`; one 1-D launch
//! each of 256-invocation workgroups. Not in place (out and inp are distinct tensors).
//! CPU references: `crate::reference::gelu`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::GELU};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `GeluParams` in shaders/gelu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GeluParams {
    n: u32, // elements
}

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

pub const GELU_FORWARD: KernelDesc = KernelDesc {
    shader: &GELU,
    entry: "gelu_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

pub const GELU_BACKWARD: KernelDesc = KernelDesc {
    shader: &GELU,
    entry: "gelu_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const GELU_ERF_FORWARD: KernelDesc = KernelDesc {
    shader: &GELU,
    entry: "gelu_erf_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

pub const GELU_ERF_BACKWARD: KernelDesc = KernelDesc {
    shader: &GELU,
    entry: "gelu_erf_backward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// out (N) = gelu(inp (N))
pub fn gelu_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp, n)?;
    let label = format!("gelu_forward {} <- {}", out.label, inp.label);
    let p = GeluParams { n: n as u32 };
    let slots = [out.into(), inp.into()];
    s.dispatch(
        ctx,
        &GELU_FORWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// dinp (N) += gelu'(inp (N)) · dout (N)
pub fn gelu_backward(
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
    let label = format!("gelu_backward {} <- {}", dinp.label, dout.label);
    let p = GeluParams { n: n as u32 };
    let slots = [dinp.into(), inp.into(), dout.into()];
    s.dispatch(
        ctx,
        &GELU_BACKWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// out (N) = inp·Φ(inp) = 0.5·inp·(1 + erf(inp/√2)) for inp (N): the exact GELU
pub fn gelu_erf_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp, n)?;
    let label = format!("gelu_erf_forward {} <- {}", out.label, inp.label);
    let p = GeluParams { n: n as u32 };
    let slots = [out.into(), inp.into()];
    s.dispatch(
        ctx,
        &GELU_ERF_FORWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}

/// dinp (N) += dout (N) · GELU'(inp (N)), GELU'(x) = Φ(x) + x·φ(x) (exact GELU)
pub fn gelu_erf_backward(
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
    let label = format!("gelu_erf_backward {} <- {}", dinp.label, dout.label);
    let p = GeluParams { n: n as u32 };
    let slots = [dinp.into(), inp.into(), dout.into()];
    s.dispatch(
        ctx,
        &GELU_ERF_BACKWARD,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, WG),
    )
}
