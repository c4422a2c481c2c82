//! Launchers for shaders/encoder.wgsl: `encoder_forward` (out = wte[token] + wpe[t]) and
//! `encoder_backward` (dwte[token] += dout, dwpe[t] += dout, deterministic, no atomics).
//! wte and dwte (V, C) are bound in row chunks that fit one storage binding
//! ([`GpuContext::row_chunks`]), with one launch per chunk: GPT-2's 50257×768 table is
//! 147 MiB, more than the 128 MiB a binding may hold. Tokens are i32 (B, T) and must lie
//! in [0, V); checking them is the host's job (the kernels read nothing out of bounds
//! for others: see the shader's opening comment). CPU references:
//! `crate::reference::encoder`.

use bytemuck::{Pod, Zeroable};

use super::{expect_dtype, expect_numel, groups_1d, shaders::ENCODER};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `EncoderParams` in shaders/encoder.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct EncoderParams {
    b: u32,    // batch
    t: u32,    // time (wpe may have more rows)
    c: u32,    // channels
    v: u32,    // vocabulary: rows of the whole wte
    row0: u32, // first wte row of the bound chunk
    rows: u32, // wte rows in the bound chunk
}

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

pub const ENCODER_FORWARD: KernelDesc = KernelDesc {
    shader: &ENCODER,
    entry: "encoder_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const ENCODER_BACKWARD_LINKS: KernelDesc = KernelDesc {
    shader: &ENCODER,
    entry: "encoder_backward_links",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

pub const ENCODER_BACKWARD_DWTE: KernelDesc = KernelDesc {
    shader: &ENCODER,
    entry: "encoder_backward_dwte",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const ENCODER_BACKWARD_DWPE: KernelDesc = KernelDesc {
    shader: &ENCODER,
    entry: "encoder_backward_dwpe",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// Check the shapes and dtypes both directions share; `pos` is wpe or dwpe (maxT, C).
fn check_common(tokens: &Tensor, pos: &Tensor, b: usize, t: usize, c: usize) -> Result<()> {
    expect_numel(tokens, b * t)?;
    expect_dtype(tokens, DType::I32)?;
    let ok = matches!(pos.shape[..], [max_t, cc] if cc == c && max_t >= t);
    if !ok {
        return Err(Error::Invalid(format!(
            "tensor {}: shape {:?}, expected (maxT, {c}) with maxT ≥ T = {t}",
            pos.label, pos.shape
        )));
    }
    Ok(())
}

fn params(b: usize, t: usize, c: usize, v: usize, rows: std::ops::Range<usize>) -> EncoderParams {
    EncoderParams {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        v: v as u32,
        row0: rows.start as u32,
        rows: rows.len() as u32,
    }
}

/// out (B, T, C) = wte (V, C)[tokens (B, T)] + wpe (maxT, C)[t]
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    tokens: &Tensor,
    wte: &Tensor,
    wpe: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    expect_numel(out, b * t * c)?;
    expect_numel(wte, v * c)?;
    check_common(tokens, wpe, b, t, c)?;
    for rows in ctx.row_chunks(v, c) {
        let label = format!(
            "encoder_forward {} <- {}[{}..{}], {}",
            out.label, wte.label, rows.start, rows.end, wpe.label
        );
        let slots = [
            out.into(),
            tokens.into(),
            wte.rows_slot(rows.clone(), c),
            wpe.into(),
        ];
        let p = params(b, t, c, v, rows);
        s.dispatch(
            ctx,
            &ENCODER_FORWARD,
            &[],
            &label,
            &slots,
            Some(&p),
            groups_1d(b * t * c, WG),
        )?;
    }
    Ok(())
}

/// dwte (V, C)[tokens (B, T)] += dout (B, T, C); dwpe (maxT, C)[t] += Σ_b dout[b, t].
/// Allocates its (B·T, 2) i32 scratch here, at record time; the schedule keeps it.
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dwte: &Tensor,
    dwpe: &Tensor,
    dout: &Tensor,
    tokens: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    expect_numel(dwte, v * c)?;
    expect_numel(dout, b * t * c)?;
    check_common(tokens, dwpe, b, t, c)?;
    let links_label = format!("encoder_backward links of {}", tokens.label);
    let links = Tensor::zeros(ctx, &links_label, &[b * t, 2], DType::I32)?;
    let p = params(b, t, c, v, 0..v);
    s.dispatch(
        ctx,
        &ENCODER_BACKWARD_LINKS,
        &[],
        &format!("encoder_backward {links_label}"),
        &[(&links).into(), tokens.into()],
        Some(&p),
        groups_1d(b * t, WG),
    )?;
    for rows in ctx.row_chunks(v, c) {
        let label = format!(
            "encoder_backward {}[{}..{}] <- {}",
            dwte.label, rows.start, rows.end, dout.label
        );
        let slots = [
            dwte.rows_slot(rows.clone(), c),
            dout.into(),
            tokens.into(),
            (&links).into(),
        ];
        let p = params(b, t, c, v, rows);
        s.dispatch(
            ctx,
            &ENCODER_BACKWARD_DWTE,
            &[],
            &label,
            &slots,
            Some(&p),
            groups_1d(b * t * c, WG),
        )?;
    }
    let label = format!("encoder_backward {} <- {}", dwpe.label, dout.label);
    s.dispatch(
        ctx,
        &ENCODER_BACKWARD_DWPE,
        &[],
        &label,
        &[dwpe.into(), dout.into()],
        Some(&p),
        groups_1d(t * c, WG),
    )
}
