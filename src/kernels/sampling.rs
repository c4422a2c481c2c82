//! Launchers for shaders/sampling.wgsl: what generation needs from the last position's
//! logits (B, V): `softmax_forward` (probabilities at a temperature), `argmax_forward`
//! (greedy decoding), `topk_forward` (the K best, sorted) and `sample_forward` (one token
//! per row drawn on the GPU after temperature, top-k and top-p, from a seeded
//! counter-based random number; only the ids are written, so a generator reads back 4·B
//! bytes per step). Ties go to the lowest index; results are deterministic. The settings
//! of `sample_forward` live in a small tensor of [`SampleSettings`] the caller rewrites
//! before each submit, so a launch is recorded once and serves every request and step.
//! Rows are processed in chunks that fit one binding, so any B works at V = 50257.
//! CPU references: `crate::reference::sampling`.

use bytemuck::{Pod, Zeroable};

use super::expect_dtype;
use super::{expect_numel, groups_1d, shaders::SAMPLING};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Largest K `topk_forward` takes. The kernel runs K rounds per row (each a tree over the
/// workgroup plus a rescan of V / 256 columns by one invocation), so the bound is one of
/// launch time, not memory.
pub const TOPK_MAX_K: usize = 1024;

/// Mirrors `SamplingParams` in shaders/sampling.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SamplingParams {
    v: u32,           // V: elements per row of logits
    rows: u32,        // rows of logits in this launch's chunk
    row_offset: u32,  // index among all B rows of the chunk's first row
    k: u32,           // K: entries per row of topk_forward's outputs
    temperature: f32, // softmax_forward divides logits by it
}

pub const SOFTMAX_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "softmax_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const ARGMAX_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "argmax_forward",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const SAMPLE_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "sample_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};
pub const TOPK_FORWARD: KernelDesc = KernelDesc {
    shader: &SAMPLING,
    entry: "topk_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Error unless `v` is a usable row length (1..2³²).
fn check_v(op: &str, v: usize) -> Result<()> {
    if v == 0 || v >= u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{op}: V = {v} must be in 1..2^32-1"
        )));
    }
    Ok(())
}

/// probs (B, V) = softmax(logits (B, V) / temperature) per row; temperature > 0.
pub fn softmax_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    probs: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
    temperature: f32,
) -> Result<()> {
    check_v("softmax_forward", v)?;
    expect_numel(probs, b * v)?;
    expect_numel(logits, b * v)?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Invalid(format!(
            "softmax_forward: temperature {temperature} must be finite and > 0"
        )));
    }
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: 0,
            temperature,
        };
        let label = format!(
            "softmax_forward {} <- {} rows {rows:?}",
            probs.label, logits.label
        );
        let slots = [
            probs.rows_slot(rows.clone(), v),
            logits.rows_slot(rows.clone(), v),
        ];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &SOFTMAX_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// indices (B) u32 = the column of each row's largest logit (B, V); ties to the lowest.
pub fn argmax_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    indices: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
) -> Result<()> {
    check_v("argmax_forward", v)?;
    expect_numel(indices, b)?;
    expect_numel(logits, b * v)?;
    expect_dtype(indices, DType::U32)?;
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: 0,
            temperature: 1.0,
        };
        let label = format!(
            "argmax_forward {} <- {} rows {rows:?}",
            indices.label, logits.label
        );
        let slots = [indices.into(), logits.rows_slot(rows.clone(), v)];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &ARGMAX_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// values (B, K), indices (B, K) u32 = each row's K largest logits (B, V) and their
/// columns, sorted descending; equal values in increasing column order.
/// 1 <= K <= min(V, [`TOPK_MAX_K`]).
#[allow(clippy::too_many_arguments)]
pub fn topk_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    values: &Tensor,
    indices: &Tensor,
    logits: &Tensor,
    b: usize,
    v: usize,
    k: usize,
) -> Result<()> {
    check_v("topk_forward", v)?;
    if k == 0 || k > v || k > TOPK_MAX_K {
        return Err(Error::Invalid(format!(
            "topk_forward: K = {k} must be in 1..={} (V = {v}, TOPK_MAX_K = {TOPK_MAX_K})",
            v.min(TOPK_MAX_K)
        )));
    }
    expect_numel(values, b * k)?;
    expect_numel(indices, b * k)?;
    expect_numel(logits, b * v)?;
    expect_dtype(indices, DType::U32)?;
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: k as u32,
            temperature: 1.0,
        };
        let label = format!(
            "topk_forward {}, {} <- {} rows {rows:?}",
            values.label, indices.label, logits.label
        );
        let slots = [
            values.into(),
            indices.into(),
            logits.rows_slot(rows.clone(), v),
        ];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &TOPK_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}

/// How `sample_forward` draws one row's token. Mirrors `SampleSettings` in
/// shaders/sampling.wgsl. Build with [`SampleSettings::new`] (checked) or
/// [`SampleSettings::greedy`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SampleSettings {
    /// 0: greedy (argmax); otherwise the logits are divided by it.
    pub temperature: f32,
    /// Keep the K largest logits (every tie of the K-th); 0 or ≥ V: all.
    pub top_k: u32,
    /// Then keep the fewest largest whose probability reaches top_p (every tie of the
    /// last one); 1: all.
    pub top_p: f32,
    seed_lo: u32,
    seed_hi: u32,
    /// Index of the draw: each (seed, counter) gives its own uniform number.
    pub counter: u32,
    _pad: [u32; 2],
}

/// 4-byte words of one [`SampleSettings`].
pub const SAMPLE_SETTINGS_WORDS: usize = std::mem::size_of::<SampleSettings>() / 4;

impl SampleSettings {
    /// Settings for a draw; errors name the value that is out of range: temperature must
    /// be finite and ≥ 0, top_p in (0, 1].
    pub fn new(temperature: f32, top_k: u32, top_p: f32, seed: u64, counter: u32) -> Result<Self> {
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(Error::Invalid(format!(
                "temperature {temperature} must be finite and ≥ 0 (0 is greedy)"
            )));
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::Invalid(format!(
                "top_p {top_p} must lie in (0, 1] (1 keeps every token)"
            )));
        }
        Ok(SampleSettings {
            temperature,
            top_k,
            top_p,
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            counter,
            _pad: [0; 2],
        })
    }

    /// The argmax, as `argmax_forward`.
    pub fn greedy() -> Self {
        Self::new(0.0, 0, 1.0, 0, 0).expect("greedy settings are valid")
    }

    pub fn seed(&self) -> u64 {
        self.seed_lo as u64 | (self.seed_hi as u64) << 32
    }

    /// A settings tensor for `b` rows, (B, 8) u32, zeroed (greedy): allocate once,
    /// [`write`](Self::write) before a submit whose draws should change.
    pub fn tensor(ctx: &GpuContext, label: &str, b: usize) -> Result<Tensor> {
        Tensor::zeros(ctx, label, &[b, SAMPLE_SETTINGS_WORDS], DType::U32)
    }

    /// Stage `rows` into `settings` (queue.write_buffer); they take effect in the next submit.
    pub fn write(ctx: &GpuContext, settings: &Tensor, rows: &[SampleSettings]) -> Result<()> {
        settings.write(ctx, bytemuck::cast_slice::<SampleSettings, u32>(rows))
    }
}

/// indices (B) u32 = a token drawn from each row of logits (B, V) as its row of settings
/// (B) [`SampleSettings`] says; see shaders/sampling.wgsl for the exact rule.
pub fn sample_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    indices: &Tensor,
    logits: &Tensor,
    settings: &Tensor,
    b: usize,
    v: usize,
) -> Result<()> {
    check_v("sample_forward", v)?;
    expect_numel(indices, b)?;
    expect_numel(logits, b * v)?;
    expect_numel(settings, b * SAMPLE_SETTINGS_WORDS)?;
    expect_dtype(indices, DType::U32)?;
    expect_dtype(settings, DType::U32)?;
    if b == 0 {
        return Ok(());
    }
    for rows in ctx.row_chunks(b, v) {
        let p = SamplingParams {
            v: v as u32,
            rows: rows.len() as u32,
            row_offset: rows.start as u32,
            k: 0,
            temperature: 1.0,
        };
        let label = format!(
            "sample_forward {} <- {} rows {rows:?}, {}",
            indices.label, logits.label, settings.label
        );
        let slots = [
            indices.into(),
            logits.rows_slot(rows.clone(), v),
            settings.into(),
        ];
        let groups = groups_1d(rows.len(), 1);
        s.dispatch(ctx, &SAMPLE_FORWARD, &[], &label, &slots, Some(&p), groups)?;
    }
    Ok(())
}
