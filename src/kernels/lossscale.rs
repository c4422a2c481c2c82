//! Launchers for shaders/lossscale.wgsl: dynamic loss scaling for the mixed path, whose
//! matmuls read activations and gradients rounded to f16 (`--precision mixed`). The
//! state lives on the GPU in a [`LossScaler`]'s `state` (4 f32: scale S, finite steps in
//! a row, whether the last step was skipped, steps skipped), so a training step stays one
//! submit with no readback: `loss_scale_apply` multiplies the loss's backward weight by S
//! before the backward, and `loss_scale_update`, after `gradnorm_finish`, unscales the
//! norm state AdamW reads, or on an overflow flags the step skipped and halves S; S
//! doubles after `growth_interval` finite steps in a row (torch.cuda.amp.GradScaler's
//! rule and defaults). CPU reference: `crate::reference::lossscale`.

use bytemuck::{Pod, Zeroable};

use super::crossentropy::STATS_LEN;
use super::gradnorm::NORM_STATE_LEN;
use super::{expect_dtype, expect_numel, shaders::LOSS_SCALE};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Words of a loss scaler's state: `[scale, finite steps in a row, last skipped, skipped]`.
pub const SCALER_LEN: usize = 4;

/// Mirrors `LossScaleParams` in shaders/lossscale.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct LossScaleParams {
    growth_interval: u32,
    max_scale: f32,
    min_scale: f32,
    _pad: u32,
}

pub const LOSS_SCALE_APPLY: KernelDesc = KernelDesc {
    shader: &LOSS_SCALE,
    entry: "loss_scale_apply",
    bindings: &[Binding::ReadWrite, Binding::Read],
};

pub const LOSS_SCALE_UPDATE: KernelDesc = KernelDesc {
    shader: &LOSS_SCALE,
    entry: "loss_scale_update",
    bindings: &[Binding::ReadWrite, Binding::ReadWrite, Binding::Uniform],
};

/// The scaler's rule. Defaults are `torch.cuda.amp.GradScaler`'s: S starts at 2^16,
/// halves on an overflow, doubles after 2000 finite steps in a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaleConfig {
    pub init_scale: f32,
    pub growth_interval: u32,
    /// S never grows past this (2^24: far beyond what f16 gradients need).
    pub max_scale: f32,
    /// S never shrinks below this (1: an overflow at S = 1 comes from the forward).
    pub min_scale: f32,
}

impl Default for LossScaleConfig {
    fn default() -> Self {
        LossScaleConfig {
            init_scale: 65536.0,
            growth_interval: 2000,
            max_scale: 16_777_216.0,
            min_scale: 1.0,
        }
    }
}

impl LossScaleConfig {
    fn check(&self) -> Result<()> {
        let ok = self.min_scale > 0.0
            && self.min_scale <= self.init_scale
            && self.init_scale <= self.max_scale
            && self.max_scale.is_finite()
            && self.growth_interval > 0;
        if !ok {
            return Err(Error::Invalid(format!(
                "loss scaling: expected 0 < min_scale ≤ init_scale ≤ max_scale < inf and a \
                 growth interval of at least 1 step, got {self:?}"
            )));
        }
        Ok(())
    }
}

/// The scaler's state as read back (and as `trainer.json` keeps it).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossScaleState {
    /// S, the factor the next step's gradients carry.
    pub scale: f32,
    /// Finite steps since S last changed.
    pub good_steps: u32,
    /// Whether the last step overflowed and was skipped.
    pub last_skipped: bool,
    /// Steps skipped since the scaler was made.
    pub skipped: u32,
}

/// A loss scaler's GPU state and rule.
pub struct LossScaler {
    /// (4) f32: `[scale, finite steps in a row, last skipped, steps skipped]`.
    pub state: Tensor,
    pub config: LossScaleConfig,
}

impl LossScaler {
    /// A scaler at `config.init_scale` (staged into the next submit).
    pub fn new(ctx: &GpuContext, config: LossScaleConfig) -> Result<Self> {
        config.check()?;
        let state = Tensor::from_f32(
            ctx,
            "loss scaler",
            &[SCALER_LEN],
            &[config.init_scale, 0.0, 0.0, 0.0],
        )?;
        Ok(LossScaler { state, config })
    }

    /// Write `st` as the state (resuming a run, or tests; staged into the next submit).
    pub fn write(&self, ctx: &GpuContext, st: &LossScaleState) -> Result<()> {
        if !(st.scale > 0.0 && st.scale.is_finite()) {
            return Err(Error::Invalid(format!(
                "loss scale must be positive and finite, got {}",
                st.scale
            )));
        }
        let skipped_last = if st.last_skipped { 1.0 } else { 0.0 };
        self.state.write(
            ctx,
            &[
                st.scale,
                st.good_steps as f32,
                skipped_last,
                st.skipped as f32,
            ],
        )
    }

    pub async fn read(&self, ctx: &GpuContext) -> Result<LossScaleState> {
        let v = self.state.read_f32(ctx).await?;
        Ok(LossScaleState {
            scale: v[0],
            good_steps: v[1] as u32,
            last_skipped: v[2] != 0.0,
            skipped: v[3] as u32,
        })
    }
}

/// loss_stats[2] (the backward's weight 1/count) *= scaler[0]: the gradients of the
/// backward that follows carry the factor S.
pub fn loss_scale_apply(
    s: &mut Schedule,
    ctx: &GpuContext,
    loss_stats: &Tensor,
    scaler: &Tensor,
) -> Result<()> {
    expect_numel(loss_stats, STATS_LEN)?;
    expect_numel(scaler, SCALER_LEN)?;
    expect_dtype(loss_stats, DType::F32)?;
    expect_dtype(scaler, DType::F32)?;
    let label = format!("loss_scale_apply {} *= {}", loss_stats.label, scaler.label);
    s.dispatch::<LossScaleParams>(
        ctx,
        &LOSS_SCALE_APPLY,
        &[],
        &label,
        &[loss_stats.into(), scaler.into()],
        None,
        [1, 1, 1],
    )
}

/// After `gradnorm_finish` over gradients that carry S: unscale `norm_state` (norm / S,
/// clip_scale / S) and count a finite step, or flag the step skipped (norm_state[4] = 1)
/// and halve S; S doubles after `config.growth_interval` finite steps in a row.
pub fn loss_scale_update(
    s: &mut Schedule,
    ctx: &GpuContext,
    norm_state: &Tensor,
    scaler: &Tensor,
    config: &LossScaleConfig,
) -> Result<()> {
    config.check()?;
    expect_numel(norm_state, NORM_STATE_LEN)?;
    expect_numel(scaler, SCALER_LEN)?;
    expect_dtype(norm_state, DType::F32)?;
    expect_dtype(scaler, DType::F32)?;
    let p = LossScaleParams {
        growth_interval: config.growth_interval,
        max_scale: config.max_scale,
        min_scale: config.min_scale,
        _pad: 0,
    };
    let label = format!("loss_scale_update {} {}", norm_state.label, scaler.label);
    s.dispatch(
        ctx,
        &LOSS_SCALE_UPDATE,
        &[],
        &label,
        &[norm_state.into(), scaler.into()],
        Some(&p),
        [1, 1, 1],
    )
}
