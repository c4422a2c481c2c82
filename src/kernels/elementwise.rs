//! Launchers for shaders/elementwise.wgsl: `fill`, `copy`, `add`. Each records one 1-D
//! launch of 256-invocation workgroups. CPU references: `crate::reference::elementwise`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::ELEMENTWISE};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `ElementwiseParams` in shaders/elementwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    n: u32,     // elements
    value: f32, // fill value
}

const WG: usize = 256;

pub const FILL: KernelDesc = KernelDesc {
    shader: &ELEMENTWISE,
    entry: "fill",
    bindings: &[Binding::ReadWrite, Binding::Uniform],
};
pub const COPY: KernelDesc = KernelDesc {
    shader: &ELEMENTWISE,
    entry: "copy",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const ADD: KernelDesc = KernelDesc {
    shader: &ELEMENTWISE,
    entry: "add",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// out[i] = value
pub fn fill(s: &mut Schedule, ctx: &GpuContext, out: &Tensor, value: f32) -> Result<()> {
    let n = out.numel();
    let p = ElementwiseParams { n: n as u32, value };
    let label = format!("fill {}", out.label);
    s.dispatch(
        ctx,
        &FILL,
        &[],
        &label,
        &[out.into()],
        Some(&p),
        groups_1d(n, WG),
    )
}

/// out[i] = inp[i]
pub fn copy(s: &mut Schedule, ctx: &GpuContext, out: &Tensor, inp: &Tensor) -> Result<()> {
    let n = out.numel();
    expect_numel(inp, n)?;
    let p = ElementwiseParams {
        n: n as u32,
        value: 0.0,
    };
    let label = format!("copy {} <- {}", out.label, inp.label);
    let slots = [out.into(), inp.into()];
    s.dispatch(ctx, &COPY, &[], &label, &slots, Some(&p), groups_1d(n, WG))
}

/// out[i] = a[i] + b[i]
pub fn add(s: &mut Schedule, ctx: &GpuContext, out: &Tensor, a: &Tensor, b: &Tensor) -> Result<()> {
    let n = out.numel();
    expect_numel(a, n)?;
    expect_numel(b, n)?;
    let p = ElementwiseParams {
        n: n as u32,
        value: 0.0,
    };
    let label = format!("add {}", out.label);
    let slots = [out.into(), a.into(), b.into()];
    s.dispatch(ctx, &ADD, &[], &label, &slots, Some(&p), groups_1d(n, WG))
}
