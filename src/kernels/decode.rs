//! Launchers for shaders/decode.wgsl: what a forward pass over a KV cache needs beyond
//! the training kernels. `decode_embed` (token plus position embedding at each row's
//! position), `decode_append` (new keys and values into the caches), `decode_attention`
//! (new queries over the cache), `decode_gather` (each row's last real position) and
//! `decode_logits` (the tied classifier of those rows only, without workgroup memory or
//! barriers, for the few rows of a decode step).
//! Per-row positions and lengths live in a state tensor of [`DecodeRow`]s that the
//! caller rewrites before each submit, so a pass is recorded once and replayed at every
//! position. The caches, (B, NH, maxT, HS) per layer, are bound whole; wte is bound in
//! row chunks where it exceeds one binding. This module does not own any tensor; the
//! generator in `crate::infer` does. CPU references: `crate::reference::decode`.

use bytemuck::{Pod, Zeroable};

use super::cast::expect_f16;
use super::expect_dtype;
use super::{
    expect_numel, groups_1d,
    shaders::{DECODE, DECODE_F16},
};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `DecodeParams` in shaders/decode.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DecodeParams {
    b: u32,     // batch rows B
    t: u32,     // positions fed per row in this pass (T)
    c: u32,     // channels C = NH·HS
    nh: u32,    // heads NH
    hs: u32,    // head size HS
    max_t: u32, // positions the cache holds (maxT)
    v: u32,     // vocabulary V (decode_embed)
    row0: u32,  // first wte row of the bound chunk (decode_embed)
    rows: u32,  // wte rows in the bound chunk (decode_embed)
    scale: f32, // 1/√HS (decode_attention)
}

/// One batch row's place in its sequence, as the kernels read it from the state tensor.
/// Mirrors `DecodeRow` in shaders/decode.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DecodeRow {
    /// Position of the pass's first new token.
    pub pos: u32,
    /// Real new tokens, 1..=T; rows past them pad a prompt up to the pass's T.
    pub n: u32,
}

/// 4-byte words of one [`DecodeRow`].
pub const DECODE_ROW_WORDS: usize = std::mem::size_of::<DecodeRow>() / 4;

impl DecodeRow {
    /// A state tensor for `b` rows, (B, 2) u32, zeroed: allocate once, [`write`](Self::write)
    /// before every submit.
    pub fn tensor(ctx: &GpuContext, label: &str, b: usize) -> Result<Tensor> {
        Tensor::zeros(ctx, label, &[b, DECODE_ROW_WORDS], DType::U32)
    }

    /// Stage `rows` into `state` (queue.write_buffer): they take effect in the next submit.
    pub fn write(ctx: &GpuContext, state: &Tensor, rows: &[DecodeRow]) -> Result<()> {
        state.write(ctx, bytemuck::cast_slice::<DecodeRow, u32>(rows))
    }
}

/// Largest head size `decode_attention` takes (`MAX_HS` in the shader).
pub const DECODE_MAX_HEAD_SIZE: usize = 128;

/// Invocations per workgroup of every decode kernel (`WG` in the shader).
const WG: usize = 64;

pub const DECODE_EMBED: KernelDesc = KernelDesc {
    shader: &DECODE,
    entry: "decode_embed",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const DECODE_APPEND: KernelDesc = KernelDesc {
    shader: &DECODE,
    entry: "decode_append",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const DECODE_ATTENTION: KernelDesc = KernelDesc {
    shader: &DECODE,
    entry: "decode_attention",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const DECODE_GATHER: KernelDesc = KernelDesc {
    shader: &DECODE,
    entry: "decode_gather",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const DECODE_LOGITS: KernelDesc = KernelDesc {
    shader: &DECODE,
    entry: "decode_logits",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Rows of wte one invocation of `decode_logits` takes (`LOGIT_ROWS` in the shader).
const LOGIT_ROWS: usize = 4;

/// Params for a pass of `t` positions over `b` rows of `c` channels in `nh` heads, over
/// a cache of `max_t` positions. The head size is checked only where `nh` is given.
fn params(b: usize, t: usize, c: usize, nh: Option<usize>, max_t: usize) -> Result<DecodeParams> {
    let hs = match nh {
        None => 0,
        Some(nh) => {
            if nh == 0 || !c.is_multiple_of(nh) {
                return Err(Error::Invalid(format!(
                    "decode: {c} channels do not split into {nh} heads"
                )));
            }
            let hs = c / nh;
            if hs == 0 || hs > DECODE_MAX_HEAD_SIZE {
                return Err(Error::Invalid(format!(
                    "decode: head size {hs} (C {c} / NH {nh}) is outside \
                     1..={DECODE_MAX_HEAD_SIZE}"
                )));
            }
            hs
        }
    };
    if max_t == 0 || t > max_t {
        return Err(Error::Invalid(format!(
            "decode: a pass of {t} positions does not fit a cache of {max_t}"
        )));
    }
    Ok(DecodeParams {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        nh: nh.unwrap_or(1) as u32,
        hs: hs as u32,
        max_t: max_t as u32,
        v: 0,
        row0: 0,
        rows: 0,
        scale: if hs == 0 {
            0.0
        } else {
            (1.0 / (hs as f64).sqrt()) as f32
        },
    })
}

fn check_state(state: &Tensor, b: usize) -> Result<()> {
    expect_numel(state, b * DECODE_ROW_WORDS)?;
    expect_dtype(state, DType::U32)
}

fn check_cache(cache: &Tensor, b: usize, c: usize, max_t: usize) -> Result<()> {
    expect_numel(cache, b * max_t * c)
}

/// x (B, T, C) = wte (V, C)[tokens (B, T)] + wpe (≥ maxT, C)[pos + i] for the real rows
/// i < n of each batch row (state (B) [`DecodeRow`]); padded rows are zeroed.
#[allow(clippy::too_many_arguments)]
pub fn decode_embed(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    tokens: &Tensor,
    wte: &Tensor,
    wpe: &Tensor,
    state: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    max_t: usize,
) -> Result<()> {
    expect_numel(out, b * t * c)?;
    expect_numel(tokens, b * t)?;
    expect_dtype(tokens, DType::I32)?;
    expect_numel(wte, v * c)?;
    if wpe.shape.len() != 2 || wpe.shape[1] != c || wpe.shape[0] < max_t {
        return Err(Error::Invalid(format!(
            "tensor {}: shape {:?}, expected (maxT, {c}) with maxT ≥ {max_t}",
            wpe.label, wpe.shape
        )));
    }
    check_state(state, b)?;
    if b * t == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(v, c) {
        let mut p = params(b, t, c, None, max_t)?;
        p.v = v as u32;
        p.row0 = rows.start as u32;
        p.rows = rows.len() as u32;
        let label = format!(
            "decode_embed {} <- {}[{:?}], {}",
            out.label, wte.label, rows, wpe.label
        );
        let slots = [
            out.into(),
            tokens.into(),
            wte.rows_slot(rows.clone(), c),
            wpe.into(),
            state.into(),
        ];
        let groups = groups_1d(b * t * c, WG);
        s.dispatch(ctx, &DECODE_EMBED, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// k_cache, v_cache (B, NH, maxT, HS) at position pos + i = the keys and values of the
/// real rows i < n of qkv (B, T, 3C). Other positions are left as they are.
#[allow(clippy::too_many_arguments)]
pub fn decode_append(
    s: &mut Schedule,
    ctx: &GpuContext,
    k_cache: &Tensor,
    v_cache: &Tensor,
    qkv: &Tensor,
    state: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    max_t: usize,
) -> Result<()> {
    let p = params(b, t, c, Some(nh), max_t)?;
    check_cache(k_cache, b, c, max_t)?;
    check_cache(v_cache, b, c, max_t)?;
    expect_numel(qkv, b * t * 3 * c)?;
    check_state(state, b)?;
    if b * t == 0 {
        return Ok(());
    }
    let label = format!(
        "decode_append {}, {} <- {}",
        k_cache.label, v_cache.label, qkv.label
    );
    let slots = [k_cache.into(), v_cache.into(), qkv.into(), state.into()];
    let groups = groups_1d(b * t * 2 * c, WG);
    s.dispatch(ctx, &DECODE_APPEND, &[], &label, &slots, Some(&p), groups)
}

/// out (B, T, C) = causal attention of the queries of qkv (B, T, 3C) over the caches
/// (B, NH, maxT, HS): real row i attends to positions 0..=pos+i; padded rows are 0.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    qkv: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    state: &Tensor,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    max_t: usize,
) -> Result<()> {
    let p = params(b, t, c, Some(nh), max_t)?;
    expect_numel(out, b * t * c)?;
    expect_numel(qkv, b * t * 3 * c)?;
    check_cache(k_cache, b, c, max_t)?;
    check_cache(v_cache, b, c, max_t)?;
    check_state(state, b)?;
    if b * t == 0 {
        return Ok(());
    }
    let label = format!(
        "decode_attention {} <- {}, {}, {}",
        out.label, qkv.label, k_cache.label, v_cache.label
    );
    let slots = [
        out.into(),
        qkv.into(),
        k_cache.into(),
        v_cache.into(),
        state.into(),
    ];
    let groups = groups_1d(b * nh * t, 1);
    s.dispatch(
        ctx,
        &DECODE_ATTENTION,
        &[],
        &label,
        &slots,
        Some(&p),
        groups,
    )
}

/// out (B, C) = x (B, T, C)[b, n - 1]: each batch row's last real position.
#[allow(clippy::too_many_arguments)]
pub fn decode_gather(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    x: &Tensor,
    state: &Tensor,
    b: usize,
    t: usize,
    c: usize,
) -> Result<()> {
    expect_numel(out, b * c)?;
    expect_numel(x, b * t * c)?;
    check_state(state, b)?;
    if b * t == 0 {
        return Ok(());
    }
    let p = params(b, t, c, None, t)?;
    let label = format!("decode_gather {} <- {}", out.label, x.label);
    let slots = [out.into(), x.into(), state.into()];
    let groups = groups_1d(b * c, WG);
    s.dispatch(ctx, &DECODE_GATHER, &[], &label, &slots, Some(&p), groups)
}

/// logits (B, V) = x (B, C) · wte (V, C)ᵀ, each element a sum over C in order: the tied
/// classifier for the few rows of a decode step. wte is bound in row chunks where it
/// exceeds one binding.
#[allow(clippy::too_many_arguments)]
pub fn decode_logits(
    s: &mut Schedule,
    ctx: &GpuContext,
    logits: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    b: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    expect_numel(logits, b * v)?;
    expect_numel(x, b * c)?;
    expect_numel(wte, v * c)?;
    expect_dtype(logits, DType::F32)?;
    expect_dtype(x, DType::F32)?;
    // wte may be f16 (the f16 path's copy): the same kernel with wte read as f16.
    let desc = if wte.dtype == DType::F16 {
        expect_f16("decode_logits", ctx)?;
        KernelDesc {
            shader: &DECODE_F16,
            ..DECODE_LOGITS
        }
    } else {
        expect_dtype(wte, DType::F32)?;
        DECODE_LOGITS
    };
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks_of(wte.dtype, v, c) {
        let mut p = params(b, 1, c, None, 1)?;
        p.v = v as u32;
        p.row0 = rows.start as u32;
        p.rows = rows.len() as u32;
        let label = format!(
            "decode_logits {} <- {} · {}[{:?}]ᵀ",
            logits.label, x.label, wte.label, rows
        );
        let slots = [logits.into(), x.into(), wte.rows_slot(rows.clone(), c)];
        let groups = groups_1d(b * rows.len().div_ceil(LOGIT_ROWS), WG);
        s.dispatch(ctx, &desc, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}
