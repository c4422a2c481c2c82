//! Launchers for shaders/encoder.wgsl: `embed_forward` (out = emb[token]·scale + pe[t])
//! and `embed_backward` (demb[token] += scale·dout, dpe[t] += dout, deterministic, no
//! atomics), with GPT-2's `encoder_forward` / `encoder_backward` as their scale-1 case
//! (bit for bit what they were before the scale), and `sinusoidal_positions`, the fixed
//! position table of torch's Transformer, which a model uploads as `pe`.
//! emb and demb (V, C) are bound in row chunks that fit one storage binding
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
    b: u32,     // batch
    t: u32,     // time (wpe may have more rows)
    c: u32,     // channels
    v: u32,     // vocabulary: rows of the whole wte
    row0: u32,  // first wte row of the bound chunk
    rows: u32,  // wte rows in the bound chunk
    scale: f32, // multiplies the token embedding
    _pad: u32,  // to 32 bytes
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

/// Error unless `tokens` is i32 (B, T).
fn check_tokens(tokens: &Tensor, b: usize, t: usize) -> Result<()> {
    expect_numel(tokens, b * t)?;
    expect_dtype(tokens, DType::I32)
}

/// Error unless `pos` (pe or dpe) is (maxT, C) with maxT ≥ T.
fn check_positions(pos: &Tensor, t: usize, c: usize) -> Result<()> {
    let ok = matches!(pos.shape[..], [max_t, cc] if cc == c && max_t >= t);
    if !ok {
        return Err(Error::Invalid(format!(
            "tensor {}: shape {:?}, expected (maxT, {c}) with maxT ≥ T = {t}",
            pos.label, pos.shape
        )));
    }
    Ok(())
}

fn params(
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    rows: std::ops::Range<usize>,
    scale: f32,
) -> EncoderParams {
    EncoderParams {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        v: v as u32,
        row0: rows.start as u32,
        rows: rows.len() as u32,
        scale,
        _pad: 0,
    }
}

/// out (B, T, C) = emb (V, C)[tokens (B, T)] · scale + pe (maxT, C)[t]
#[allow(clippy::too_many_arguments)]
pub fn embed_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    tokens: &Tensor,
    emb: &Tensor,
    pe: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    scale: f32,
) -> Result<()> {
    expect_numel(out, b * t * c)?;
    expect_numel(emb, v * c)?;
    check_tokens(tokens, b, t)?;
    check_positions(pe, t, c)?;
    for rows in ctx.row_chunks(v, c) {
        let label = format!(
            "embed_forward {} <- {}[{}..{}]·{scale}, {}",
            out.label, emb.label, rows.start, rows.end, pe.label
        );
        let slots = [
            out.into(),
            tokens.into(),
            emb.rows_slot(rows.clone(), c),
            pe.into(),
        ];
        let p = params(b, t, c, v, rows, scale);
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

/// demb (V, C)[tokens (B, T)] += scale · Σ dout (B, T, C), summed in position order;
/// dpe (maxT, C)[t] += Σ_b dout[b, t] if `dpe` is given (a fixed table has none).
/// Allocates its (B·T, 2) i32 scratch here, at record time; the schedule keeps it.
#[allow(clippy::too_many_arguments)]
pub fn embed_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    demb: &Tensor,
    dpe: Option<&Tensor>,
    dout: &Tensor,
    tokens: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    scale: f32,
) -> Result<()> {
    expect_numel(demb, v * c)?;
    expect_numel(dout, b * t * c)?;
    check_tokens(tokens, b, t)?;
    if let Some(dpe) = dpe {
        check_positions(dpe, t, c)?;
    }
    let links_label = format!("embed_backward links of {}", tokens.label);
    let links = Tensor::zeros(ctx, &links_label, &[b * t, 2], DType::I32)?;
    let p = params(b, t, c, v, 0..v, scale);
    s.dispatch(
        ctx,
        &ENCODER_BACKWARD_LINKS,
        &[],
        &format!("embed_backward {links_label}"),
        &[(&links).into(), tokens.into()],
        Some(&p),
        groups_1d(b * t, WG),
    )?;
    for rows in ctx.row_chunks(v, c) {
        let label = format!(
            "embed_backward {}[{}..{}] <- {}·{scale}",
            demb.label, rows.start, rows.end, dout.label
        );
        let slots = [
            demb.rows_slot(rows.clone(), c),
            dout.into(),
            tokens.into(),
            (&links).into(),
        ];
        let p = params(b, t, c, v, rows, scale);
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
    let Some(dpe) = dpe else {
        return Ok(());
    };
    let label = format!("embed_backward {} <- {}", dpe.label, dout.label);
    s.dispatch(
        ctx,
        &ENCODER_BACKWARD_DWPE,
        &[],
        &label,
        &[dpe.into(), dout.into()],
        Some(&p),
        groups_1d(t * c, WG),
    )
}

/// GPT-2's embedding: out (B, T, C) = wte (V, C)[tokens (B, T)] + wpe (maxT, C)[t];
/// [`embed_forward`] at scale 1.
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
    embed_forward(s, ctx, out, tokens, wte, wpe, b, t, c, v, 1.0)
}

/// dwte (V, C)[tokens (B, T)] += dout (B, T, C); dwpe (maxT, C)[t] += Σ_b dout[b, t]:
/// [`embed_backward`] at scale 1 with a position gradient.
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
    embed_backward(s, ctx, dwte, Some(dwpe), dout, tokens, b, t, c, v, 1.0)
}

/// The fixed sinusoidal position table (maxT, C) of torch's Transformer tutorial
/// (Vaswani et al. 2017), computed in f64 and rounded to f32:
/// pe[p, 2i] = sin(p·ω_i), pe[p, 2i + 1] = cos(p·ω_i), ω_i = exp(−2i·ln(10000)/C).
/// For odd C the last column is even and gets the sine only.
pub fn sinusoidal_positions(max_t: usize, c: usize) -> Vec<f32> {
    let mut pe = vec![0f32; max_t * c];
    let ln_base = 10000f64.ln();
    for p in 0..max_t {
        for j in (0..c).step_by(2) {
            let angle = p as f64 * (-(j as f64) * ln_base / c as f64).exp();
            pe[p * c + j] = angle.sin() as f32;
            if j + 1 < c {
                pe[p * c + j + 1] = angle.cos() as f32;
            }
        }
    }
    pe
}
