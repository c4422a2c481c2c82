//! Launcher for shaders/cast.wgsl: `cast_f32_to_f16`, out (N) = f16(inp (N)), one 1-D
//! launch of 256-invocation workgroups per binding-sized chunk. The f16 path keeps f32
//! master weights and refreshes their f16 copies with it (`model::half`). Needs a device
//! with `shader-f16` ([`GpuContext::has_f16`]). CPU reference: `crate::reference::cast`.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_numel, groups_1d, shaders::CAST};
use crate::error::{Error, Result};
use crate::gpu::{binding_chunks, Binding, DType, GpuContext, KernelDesc, Schedule, Slot, Tensor};

/// Mirrors `CastParams` in shaders/cast.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CastParams {
    n: u32, // elements of inp in this launch
}

pub const CAST_F32_TO_F16: KernelDesc = KernelDesc {
    shader: &CAST,
    entry: "cast_f32_to_f16",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// Invocations per workgroup (256 in the shader); each converts two elements.
const WG: usize = 256;

/// Elements per chunking unit: 128 f16 are 256 bytes and 128 f32 are 512, so a chunk of
/// whole units starts at an offset every device accepts for both bindings.
const UNIT: usize = 128;

/// An error unless the device can run f16 kernels.
pub(crate) fn expect_f16(op: &str, ctx: &GpuContext) -> Result<()> {
    if !ctx.has_f16() {
        return Err(Error::Invalid(format!(
            "{op}: the adapter {} lacks shader-f16, which f16 tensors need; use f32",
            ctx.adapter_name()
        )));
    }
    Ok(())
}

/// out (N, f16) = inp (N, f32) rounded to the nearest f16; beyond ±65504 it is ±inf.
pub fn cast_f32_to_f16(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    n: usize,
) -> Result<()> {
    expect_numel(out, n)?;
    expect_numel(inp, n)?;
    expect_dtype(out, DType::F16)?;
    expect_dtype(inp, DType::F32)?;
    expect_f16("cast_f32_to_f16", ctx)?;
    if n == 0 {
        return Ok(());
    }
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let units = binding_chunks(
        n.div_ceil(UNIT),
        (UNIT * 4) as u64,
        ctx.binding_limit(),
        align,
    );
    for u in &units {
        let (start, end) = (u.start * UNIT, (u.end * UNIT).min(n));
        let len = end - start;
        let mut label = format!("cast_f32_to_f16 {} <- {}", out.label, inp.label);
        if units.len() > 1 {
            label += &format!(" [{start}..{end}]");
        }
        let slots = [
            Slot {
                buffer: &out.buffer,
                offset: (start * 2) as u64,
                size: Some(DType::F16.bytes(len)),
                label: &out.label,
            },
            Slot {
                buffer: &inp.buffer,
                offset: (start * 4) as u64,
                size: Some((len * 4) as u64),
                label: &inp.label,
            },
        ];
        let p = CastParams { n: len as u32 };
        s.dispatch(
            ctx,
            &CAST_F32_TO_F16,
            &[],
            &label,
            &slots,
            Some(&p),
            groups_1d(len.div_ceil(2), WG),
        )?;
    }
    Ok(())
}
