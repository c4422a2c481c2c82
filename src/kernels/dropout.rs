//! Launchers for shaders/dropout.wgsl: inverted dropout in place with a counter-based
//! RNG. `dropout_forward` drops activations, `dropout_backward` applies the same mask to
//! their gradient; the mask is a hash of (seed, counter, site, element), recomputed in
//! each pass, never stored. The per-micro-step values (seed, counter) live in a small
//! buffer holding a [`DropoutStep`] that the host rewrites before each submit, so a
//! training step is recorded once; the rate and the site are per-launch params. Both
//! launchers WRITE in place (the backward one is an exception to the `+=` convention, as
//! crossentropy's in-place backward is). Where a model drops what is the model's business
//! (`model::gpt2`). CPU references: `crate::reference::dropout`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, groups_1d, shaders::DROPOUT};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// The per-micro-step values the dropout kernels read. Mirrors `DropoutStep` in
/// shaders/dropout.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct DropoutStep {
    pub seed_lo: u32,
    pub seed_hi: u32,
    /// Micro-step: step · K + micro-batch (wrapping).
    pub counter: u32,
    _pad: u32,
}

/// 4-byte words of a [`DropoutStep`]: the step tensor's length.
pub const DROPOUT_STEP_WORDS: usize = std::mem::size_of::<DropoutStep>() / 4;

impl DropoutStep {
    pub fn new(seed: u64, counter: u32) -> Self {
        DropoutStep {
            seed_lo: seed as u32,
            seed_hi: (seed >> 32) as u32,
            counter,
            _pad: 0,
        }
    }

    /// The words as a buffer holds them (for a (K, 4) table of micro-steps).
    pub fn words(&self) -> [u32; DROPOUT_STEP_WORDS] {
        [self.seed_lo, self.seed_hi, self.counter, 0]
    }

    /// A step buffer (4 words, zeroed): allocate once, [`write`](Self::write) before
    /// every submit, pass to every dropout launch of the schedule.
    pub fn tensor(ctx: &GpuContext, label: &str) -> Result<Tensor> {
        Tensor::zeros(ctx, label, &[DROPOUT_STEP_WORDS], DType::U32)
    }

    /// Stage these values into `step`; they take effect in the next submit.
    pub fn write(&self, ctx: &GpuContext, step: &Tensor) -> Result<()> {
        step.write(ctx, &self.words())
    }
}

/// Mirrors `DropoutParams` in shaders/dropout.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct DropoutParams {
    n: u32,         // elements of this chunk
    offset: u32,    // global index of the chunk's first element
    site: u32,      // dropout location
    threshold: u32, // round(p · 2^24)
    scale: f32,     // 1 / (1 - p)
}

const BINDINGS: &[Binding] = &[Binding::ReadWrite, Binding::Read, Binding::Uniform];

pub const DROPOUT_FORWARD: KernelDesc = KernelDesc {
    shader: &DROPOUT,
    entry: "dropout_forward",
    bindings: BINDINGS,
};
pub const DROPOUT_BACKWARD: KernelDesc = KernelDesc {
    shader: &DROPOUT,
    entry: "dropout_backward",
    bindings: BINDINGS,
};

const WG: usize = 256;

/// The 24-bit threshold below which a draw is dropped: round(p · 2^24).
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * (1u64 << 24) as f64).round() as u32
}

/// 1 / (1 - p) as the kernels multiply by it.
pub fn dropout_scale(p: f32) -> f32 {
    (1.0 / (1.0 - p as f64)) as f32
}

/// Error unless `p` is a usable dropout rate, in [0, 1).
pub fn check_rate(p: f32) -> Result<()> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid(format!(
            "dropout rate {p} must lie in [0, 1)"
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn launch(
    s: &mut Schedule,
    ctx: &GpuContext,
    desc: &KernelDesc,
    x: &Tensor,
    step: &Tensor,
    n: usize,
    p: f32,
    site: u32,
) -> Result<()> {
    check_rate(p)?;
    expect_numel(x, n)?;
    expect_numel(step, DROPOUT_STEP_WORDS)?;
    if n > u32::MAX as usize {
        return Err(Error::Invalid(format!(
            "{}: {n} elements exceed the 2^32 indices of the dropout hash",
            x.label
        )));
    }
    let chunks = ctx.row_chunks(n, 1);
    for c in &chunks {
        let params = DropoutParams {
            n: c.len() as u32,
            offset: c.start as u32,
            site,
            threshold: dropout_threshold(p),
            scale: dropout_scale(p),
        };
        let label = if chunks.len() == 1 {
            format!("{} {} site {site}", desc.entry, x.label)
        } else {
            format!(
                "{} {}[{}..{}] site {site}",
                desc.entry, x.label, c.start, c.end
            )
        };
        let slots = [x.rows_slot(c.clone(), 1), step.into()];
        s.dispatch(
            ctx,
            desc,
            &[],
            &label,
            &slots,
            Some(&params),
            groups_1d(c.len(), WG),
        )?;
    }
    Ok(())
}

/// x (n) = keep ? x / (1 - p) : 0, in place, the mask drawn from `step` (a
/// [`DropoutStep`] buffer) and `site`.
pub fn dropout_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    x: &Tensor,
    step: &Tensor,
    n: usize,
    p: f32,
    site: u32,
) -> Result<()> {
    launch(s, ctx, &DROPOUT_FORWARD, x, step, n, p, site)
}

/// dx (n) = keep ? dx / (1 - p) : 0, in place, with the mask `dropout_forward` drew for
/// the same `step` and `site`. WRITES (=), unlike other backward launchers (+=).
pub fn dropout_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    step: &Tensor,
    n: usize,
    p: f32,
    site: u32,
) -> Result<()> {
    launch(s, ctx, &DROPOUT_BACKWARD, dx, step, n, p, site)
}

/// Dropout of a training pass, as a model's forward and backward record it: the rate and
/// the [`DropoutStep`] buffer its launches read. Each model picks where it drops and
/// numbers those sites (`model::gpt2`, `model::bert`, `model::seq2seq`).
#[derive(Clone, Copy)]
pub struct Dropout<'a> {
    /// Rate in [0, 1).
    pub p: f32,
    /// (4) u32: a [`DropoutStep`], rewritten before each micro-step.
    pub step: &'a Tensor,
}

/// `x` dropped in place with the mask of `site` ([`dropout_forward`]); nothing without
/// `dropout` (evaluation).
pub fn drop_in_place(
    s: &mut Schedule,
    ctx: &GpuContext,
    dropout: Option<&Dropout>,
    x: &Tensor,
    site: u32,
) -> Result<()> {
    match dropout {
        Some(d) => dropout_forward(s, ctx, x, d.step, x.numel(), d.p, site),
        None => Ok(()),
    }
}

/// The gradient `dx` of a tensor [`drop_in_place`] dropped at `site`, taken back through
/// the same mask ([`dropout_backward`]); nothing without `dropout`.
pub fn undrop_in_place(
    s: &mut Schedule,
    ctx: &GpuContext,
    dropout: Option<&Dropout>,
    dx: &Tensor,
    site: u32,
) -> Result<()> {
    match dropout {
        Some(d) => dropout_backward(s, ctx, dx, d.step, dx.numel(), d.p, site),
        None => Ok(()),
    }
}
