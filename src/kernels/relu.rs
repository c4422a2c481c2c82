//! Launchers for shaders/relu.wgsl: `relu_forward` (out = max(inp, 0)) and
//! `relu_backward` (dinp += dout where inp > 0, torch's gradient 0 at 0), one 1-D launch
//! each of 256-invocation workgroups. Not in place (out and inp are distinct tensors, as
//! for gelu). CPU references: `crate::reference::relu`.

use super::{pointwise, shaders::RELU};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

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
    pointwise(s, ctx, &RELU_FORWARD, &[out, inp], n)
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
    pointwise(s, ctx, &RELU_BACKWARD, &[dinp, inp, dout], n)
}
