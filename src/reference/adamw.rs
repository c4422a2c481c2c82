//! Reference for shaders/adamw.wgsl: one step of `torch.optim.AdamW` on one tensor, in
//! f64, in PyTorch's order of operations. It takes the same [`AdamwStep`] the kernel reads
//! (its lr, betas, eps and t, widened) but computes the bias corrections itself.

use crate::kernels::adamw::AdamwStep;

/// One AdamW step of param (n) with moments m, v (n), all in place, from grad (n) scaled
/// by norm_state[1] (the clip scale of `gradnorm`), with decoupled weight_decay.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    param: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    grad: &[f64],
    step: &AdamwStep,
    norm_state: &[f64],
    n: usize,
    weight_decay: f64,
) {
    let (lr, beta1, beta2, eps) = (
        step.lr as f64,
        step.beta1 as f64,
        step.beta2 as f64,
        step.eps as f64,
    );
    let t = step.t as i32;
    let clip_scale = norm_state[1];
    let bc1 = 1.0 - beta1.powi(t);
    let bc2 = 1.0 - beta2.powi(t);
    for i in 0..n {
        let g = grad[i] * clip_scale;
        m[i] = beta1 * m[i] + (1.0 - beta1) * g;
        v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
        param[i] *= 1.0 - lr * weight_decay;
        let denom = v[i].sqrt() / bc2.sqrt() + eps;
        param[i] -= (lr / bc1) * m[i] / denom;
    }
}
