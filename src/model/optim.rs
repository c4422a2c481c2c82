//! The optimizer step every trainer records after its backward passes: the global
//! gradient norm and clip scale (`gradnorm`), then AdamW on each parameter
//! (`adamw_update`), biases and norms without weight decay.

use crate::error::Result;
use crate::gpu::{GpuContext, Schedule, Tensor};
use crate::kernels::adamw::adamw_update;
use crate::kernels::gradnorm::GradNorm;
use crate::kernels::lossscale::{loss_scale_update, LossScaler};
use crate::model::gpt2::OptimConfig;

/// One parameter tensor with everything its update reads and writes.
pub struct ParamSlot<'a> {
    pub param: &'a Tensor,
    pub grad: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    /// In the weight-decay group (matrices and embeddings).
    pub decay: bool,
}

/// Record clip + AdamW over `slots` into a new schedule: `gradnorm` over every gradient
/// (clipping to `opt.grad_clip`), then each parameter's update at the step `adam_step`
/// holds (an `AdamwStep`, written before each submit). With a loss `scaler` (the mixed
/// path), the gradients carry its scale: `loss_scale_update` unscales the norm state
/// between the two, or flags the step skipped on an overflow.
pub fn record_update(
    ctx: &GpuContext,
    opt: &OptimConfig,
    gradnorm: &GradNorm,
    adam_step: &Tensor,
    slots: &[ParamSlot],
    scaler: Option<&LossScaler>,
) -> Result<Schedule> {
    let mut s = Schedule::new("update");
    let grads: Vec<&Tensor> = slots.iter().map(|p| p.grad).collect();
    gradnorm.record(&mut s, ctx, &grads, opt.grad_clip.unwrap_or(0.0))?;
    if let Some(sc) = scaler {
        loss_scale_update(&mut s, ctx, &gradnorm.state, &sc.state, &sc.config)?;
    }
    for p in slots {
        let wd = if p.decay { opt.weight_decay } else { 0.0 };
        adamw_update(
            &mut s,
            ctx,
            p.param,
            p.m,
            p.v,
            p.grad,
            adam_step,
            &gradnorm.state,
            p.param.numel(),
            wd,
        )?;
    }
    Ok(s)
}

/// Pair the parallel lists of a trainer's tensors into [`ParamSlot`]s.
pub fn slots<'a>(
    params: Vec<&'a Tensor>,
    grads: Vec<&'a Tensor>,
    m: Vec<&'a Tensor>,
    v: Vec<&'a Tensor>,
    decay: impl IntoIterator<Item = bool>,
) -> Vec<ParamSlot<'a>> {
    params
        .into_iter()
        .zip(grads)
        .zip(m.into_iter().zip(v))
        .zip(decay)
        .map(|(((param, grad), (m, v)), decay)| ParamSlot {
            param,
            grad,
            m,
            v,
            decay,
        })
        .collect()
}
