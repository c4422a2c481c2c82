//! Launchers for shaders/gelu.wgsl: `gelu_forward` (out = gelu(inp), tanh approximation,
//! GPT-2) and `gelu_backward` (dinp += gelu'(inp)·dout), and their exact-erf twins
//! `gelu_erf_forward` (out = inp·Φ(inp), BERT) and `gelu_erf_backward`; one 1-D launch
//! each of 256-invocation workgroups. Not in place (out and inp are distinct tensors).
//! CPU references: `crate::reference::gelu`.

use super::{pointwise, shaders::GELU};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

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
    pointwise(s, ctx, &GELU_FORWARD, &[out, inp], n)
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
    pointwise(s, ctx, &GELU_BACKWARD, &[dinp, inp, dout], n)
}

/// out (N) = inp·Φ(inp) = 0.5·inp·(1 + erf(inp/√2)) for inp (N): the exact GELU
pub fn gelu_erf_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    pointwise(s, ctx, &GELU_ERF_FORWARD, &[out, inp], n)
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
    pointwise(s, ctx, &GELU_ERF_BACKWARD, &[dinp, inp, dout], n)
}
