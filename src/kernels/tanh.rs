//! Launchers for shaders/tanh.wgsl: `tanh_forward` (out = tanh(inp), finite at any
//! input) and `tanh_backward` (dinp += dout·(1 − out²), from the forward's output as
//! torch's tanh backward), one 1-D launch each of 256-invocation workgroups. For BERT's
//! pooler. Not in place (out and inp are distinct tensors). CPU references:
//! `crate::reference::tanh`.

use super::{pointwise, shaders::TANH};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

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
    pointwise(s, ctx, &TANH_FORWARD, &[out, inp], n)
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
    pointwise(s, ctx, &TANH_BACKWARD, &[dinp, out, dout], n)
}
