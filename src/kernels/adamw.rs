//! Launcher for shaders/adamw.wgsl: `adamw_update`, one AdamW step of one parameter
//! tensor in place, as `torch.optim.AdamW`. Per-step values live in a small GPU buffer
//! holding an [`AdamwStep`] that the host rewrites before each submit
//! ([`AdamwStep::write`]), so a training step is recorded once and replayed with a new
//! learning rate and step number; per-group values (weight decay) are per-launch params;
//! the clip scale is read on the GPU from the norm state of `kernels::gradnorm`.
//! Tensors larger than one binding are updated in binding chunks. This module does not
//! decide which parameters are decayed or schedule the learning rate; the model does.
//! CPU reference: `crate::reference::adamw`.

use bytemuck::{Pod, Zeroable};

use super::gradnorm::NORM_STATE_LEN;
use super::{expect_numel, groups_1d, shaders::ADAMW};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// The per-step values of AdamW as the GPU reads them. Mirrors `AdamwStep` in
/// shaders/adamw.wgsl. Build with [`AdamwStep::new`], which computes the bias corrections
/// in f64 (as PyTorch does in Python floats) before rounding to f32.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamwStep {
    pub(crate) lr: f32,
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) eps: f32,
    /// lr / (1 − β1^t)
    step_size: f32,
    /// sqrt(1 − β2^t)
    bc2_sqrt: f32,
    /// Step number, from 1.
    pub(crate) t: u32,
    _pad: u32,
}

/// 4-byte words of an [`AdamwStep`]: the step tensor's length.
pub const ADAMW_STEP_WORDS: usize = std::mem::size_of::<AdamwStep>() / 4;

impl AdamwStep {
    /// Step `t` (the first step is 1, as `torch.optim.AdamW` counts) at learning rate
    /// `lr`. torch's defaults are β = (0.9, 0.999), eps = 1e-8.
    pub fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, t: u32) -> Result<Self> {
        if t == 0 {
            return Err(Error::Invalid(
                "adamw: step t must be at least 1 (the first step is 1)".into(),
            ));
        }
        if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
            return Err(Error::Invalid(format!(
                "adamw: betas must lie in [0, 1), got ({beta1}, {beta2})"
            )));
        }
        let bc1 = 1.0 - (beta1 as f64).powi(t as i32);
        let bc2 = 1.0 - (beta2 as f64).powi(t as i32);
        Ok(AdamwStep {
            lr,
            beta1,
            beta2,
            eps,
            step_size: (lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            t,
            _pad: 0,
        })
    }

    pub fn lr(&self) -> f32 {
        self.lr
    }

    pub fn t(&self) -> u32 {
        self.t
    }

    /// A step buffer (8 words, zeroed): allocate once, [`write`](Self::write) before
    /// every submit, pass to every `adamw_update` of the schedule.
    pub fn tensor(ctx: &GpuContext, label: &str) -> Result<Tensor> {
        Tensor::zeros(ctx, label, &[ADAMW_STEP_WORDS], DType::U32)
    }

    /// Stage these values into `step` (queue.write_buffer); they take effect in the
    /// next submit.
    pub fn write(&self, ctx: &GpuContext, step: &Tensor) -> Result<()> {
        let words: &[u32] = bytemuck::cast_slice(std::slice::from_ref(self));
        step.write(ctx, words)
    }
}

/// Mirrors `AdamwParams` in shaders/adamw.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AdamwParams {
    n: u32,            // elements of this chunk
    weight_decay: f32, // decoupled decay of this parameter group
}

pub const ADAMW_UPDATE: KernelDesc = KernelDesc {
    shader: &ADAMW,
    entry: "adamw_update",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

const WG: usize = 256;

/// One AdamW step of `param` (n) with moments `m`, `v` (n), all in place, from `grad` (n)
/// scaled by `norm_state[1]` (the clip scale of `kernels::gradnorm`, 4 words), with the
/// step values in `step` (an [`AdamwStep`] buffer) and decoupled `weight_decay`.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    s: &mut Schedule,
    ctx: &GpuContext,
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    step: &Tensor,
    norm_state: &Tensor,
    n: usize,
    weight_decay: f32,
) -> Result<()> {
    for t in [param, m, v, grad] {
        expect_numel(t, n)?;
    }
    expect_numel(step, ADAMW_STEP_WORDS)?;
    expect_numel(norm_state, NORM_STATE_LEN)?;
    let chunks = ctx.row_chunks(n, 1);
    for c in &chunks {
        let p = AdamwParams {
            n: c.len() as u32,
            weight_decay,
        };
        let label = if chunks.len() == 1 {
            format!("adamw_update {}", param.label)
        } else {
            format!("adamw_update {}[{}..{}]", param.label, c.start, c.end)
        };
        let slots = [
            param.rows_slot(c.clone(), 1),
            m.rows_slot(c.clone(), 1),
            v.rows_slot(c.clone(), 1),
            grad.rows_slot(c.clone(), 1),
            step.into(),
            norm_state.into(),
        ];
        s.dispatch(
            ctx,
            &ADAMW_UPDATE,
            &[],
            &label,
            &slots,
            Some(&p),
            groups_1d(c.len(), WG),
        )?;
    }
    Ok(())
}
