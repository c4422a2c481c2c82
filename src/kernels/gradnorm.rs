//! Launchers for shaders/gradnorm.wgsl: the global L2 norm of many gradient tensors and
//! the clip scale of `torch.nn.utils.clip_grad_norm_`, as two deterministic passes.
//! `gradnorm_partial` writes Σ g² of each block of one gradient into its own slot of a
//! shared partials buffer (once per binding chunk of a tensor larger than one binding);
//! `gradnorm_finish` sums the slots in a fixed order into the norm state
//! `[norm, clip_scale, Σ g², max_norm]`. [`GradNorm`] plans the slots of all of a model's
//! gradients once and records both passes in one call. Nothing here scales the gradients:
//! AdamW (`kernels::adamw`) reads `clip_scale` from the state on the GPU. Reading the norm
//! back is optional ([`GradNorm::read`], or `Schedule::read_into` from `state`).
//! CPU reference: `crate::reference::gradnorm`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, shaders::GRADNORM};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `GradnormPartialParams` in shaders/gradnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GradnormPartialParams {
    n: u32,           // elements of this chunk of the gradient
    slot_offset: u32, // slot written by the launch's workgroup 0
}

/// Mirrors `GradnormFinishParams` in shaders/gradnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GradnormFinishParams {
    n_partials: u32, // slots to sum
    max_norm: f32,   // <= 0: no clipping
}

pub const GRADNORM_PARTIAL: KernelDesc = KernelDesc {
    shader: &GRADNORM,
    entry: "gradnorm_partial",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};
pub const GRADNORM_FINISH: KernelDesc = KernelDesc {
    shader: &GRADNORM,
    entry: "gradnorm_finish",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// Invocations per workgroup (WG in the shader).
const WG: usize = 256;
/// Elements each invocation of `gradnorm_partial` adds (the `ITEMS` override).
const ITEMS: usize = 16;
/// Elements one partial slot covers.
const BLOCK: usize = WG * ITEMS;

/// Words of the norm state: `[norm, clip_scale, Σ g², max_norm, skip]`; skip (1.0: AdamW
/// leaves every parameter and moment as it is) is written 0 by `gradnorm_finish` and set
/// only by the mixed path's `kernels::lossscale` on an overflow.
pub const NORM_STATE_LEN: usize = 5;
/// Index of the skip flag in the norm state.
pub const SKIP: usize = 4;
/// Index of the global gradient norm in the norm state.
pub const NORM: usize = 0;
/// Index of the clip scale (1 when clipping is off or does not bite) in the norm state.
pub const CLIP_SCALE: usize = 1;

/// Partial slots `gradnorm_partial` writes for a gradient of `n` elements on `ctx`: one
/// per block of `WG·ITEMS` elements of each binding chunk, at least one per chunk.
pub fn gradnorm_slots(ctx: &GpuContext, n: usize) -> usize {
    ctx.row_chunks(n, 1)
        .iter()
        .map(|c| c.len().div_ceil(BLOCK).max(1))
        .sum()
}

/// partials[slot_offset ..][w] = Σ grad² over block w of `grad` (n), for every block of
/// every binding chunk; writes [`gradnorm_slots`]`(ctx, n)` consecutive slots.
pub fn gradnorm_partial(
    s: &mut Schedule,
    ctx: &GpuContext,
    partials: &Tensor,
    grad: &Tensor,
    n: usize,
    slot_offset: usize,
) -> Result<()> {
    expect_numel(grad, n)?;
    let need = slot_offset + gradnorm_slots(ctx, n);
    if partials.numel() < need {
        return Err(Error::Shape {
            tensor: partials.label.clone(),
            expected: vec![need],
            found: partials.shape.clone(),
        });
    }
    let chunks = ctx.row_chunks(n, 1);
    let mut slot = slot_offset;
    for c in &chunks {
        let groups = c.len().div_ceil(BLOCK).max(1);
        let p = GradnormPartialParams {
            n: c.len() as u32,
            slot_offset: slot as u32,
        };
        let label = if chunks.len() == 1 {
            format!("gradnorm_partial {}", grad.label)
        } else {
            format!("gradnorm_partial {}[{}..{}]", grad.label, c.start, c.end)
        };
        let slots = [partials.into(), grad.rows_slot(c.clone(), 1)];
        s.dispatch(
            ctx,
            &GRADNORM_PARTIAL,
            &[("ITEMS", ITEMS as f64)],
            &label,
            &slots,
            Some(&p),
            [groups as u32, 1, 1],
        )?;
        slot += groups;
    }
    Ok(())
}

/// norm_state (5) = [norm, clip_scale, Σ g², max_norm, 0] with Σ g² = Σ partials[..n_partials],
/// norm = sqrt(Σ g²), clip_scale = min(1, max_norm / (norm + 1e-6)), or 1 if max_norm <= 0.
pub fn gradnorm_finish(
    s: &mut Schedule,
    ctx: &GpuContext,
    norm_state: &Tensor,
    partials: &Tensor,
    n_partials: usize,
    max_norm: f32,
) -> Result<()> {
    expect_numel(norm_state, NORM_STATE_LEN)?;
    if partials.numel() < n_partials {
        return Err(Error::Shape {
            tensor: partials.label.clone(),
            expected: vec![n_partials],
            found: partials.shape.clone(),
        });
    }
    let p = GradnormFinishParams {
        n_partials: n_partials as u32,
        max_norm,
    };
    let label = format!("gradnorm_finish {}", norm_state.label);
    let slots = [norm_state.into(), partials.into()];
    s.dispatch(
        ctx,
        &GRADNORM_FINISH,
        &[],
        &label,
        &slots,
        Some(&p),
        [1, 1, 1],
    )
}

/// The norm and clip scale as read back from a [`GradNorm`]'s state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormState {
    pub norm: f32,
    pub clip_scale: f32,
}

/// The global gradient norm of a fixed list of gradient tensors: partial slots planned
/// once, both passes recorded by one call. Make it once per model (the list and its order
/// are fixed); record it after the backward pass and before the AdamW updates, which bind
/// [`state`](Self::state) to read the clip scale.
pub struct GradNorm {
    /// (n_partials): Σ g² per block of every gradient; scratch rewritten every replay.
    pub partials: Tensor,
    /// (4): `[norm, clip_scale, Σ g², max_norm]` of the last replay. Bind it as
    /// `norm_state` of `adamw_update`; read it back for logging.
    pub state: Tensor,
    /// (numel, first slot) of each gradient, in the order given to [`new`](Self::new).
    plan: Vec<(usize, usize)>,
    n_partials: usize,
}

impl GradNorm {
    /// Plan the slots of `grads` (in this order) and allocate the partials and the state.
    /// The state starts as `[0, 1, 0, 0]` so that AdamW may read it before any record.
    pub fn new(ctx: &GpuContext, grads: &[&Tensor]) -> Result<Self> {
        let mut plan = Vec::with_capacity(grads.len());
        let mut n_partials = 0;
        for g in grads {
            plan.push((g.numel(), n_partials));
            n_partials += gradnorm_slots(ctx, g.numel());
        }
        let partials = Tensor::zeros(ctx, "gradnorm partials", &[n_partials.max(1)], DType::F32)?;
        let state = Tensor::from_f32(
            ctx,
            "gradnorm state",
            &[NORM_STATE_LEN],
            &[0.0, 1.0, 0.0, 0.0, 0.0],
        )?;
        Ok(GradNorm {
            partials,
            state,
            plan,
            n_partials,
        })
    }

    /// Partial slots in all (one per 4096 elements of each binding chunk of each gradient).
    pub fn n_partials(&self) -> usize {
        self.n_partials
    }

    /// Record pass 1 for every gradient of `grads` (the list given to `new`, same order
    /// and sizes) and pass 2 with `max_norm` (<= 0: no clipping, clip_scale = 1).
    pub fn record(
        &self,
        s: &mut Schedule,
        ctx: &GpuContext,
        grads: &[&Tensor],
        max_norm: f32,
    ) -> Result<()> {
        if grads.len() != self.plan.len() {
            return Err(Error::Invalid(format!(
                "gradnorm: planned for {} gradient tensors, recorded with {}",
                self.plan.len(),
                grads.len()
            )));
        }
        for (g, &(n, slot)) in grads.iter().zip(&self.plan) {
            gradnorm_partial(s, ctx, &self.partials, g, n, slot)?;
        }
        gradnorm_finish(
            s,
            ctx,
            &self.state,
            &self.partials,
            self.n_partials,
            max_norm,
        )
    }

    /// Read the norm and clip scale of the last replay (one submit; for tests and logs).
    pub async fn read(&self, ctx: &GpuContext) -> Result<NormState> {
        let v = self.state.read_f32(ctx).await?;
        Ok(NormState {
            norm: v[NORM],
            clip_scale: v[CLIP_SCALE],
        })
    }
}
