//! Reference for shaders/gradnorm.wgsl: the global L2 norm of many gradients and the clip
//! scale of `torch.nn.utils.clip_grad_norm_`, in f64. `gradnorm_partial` here writes one
//! slot per tensor (the kernel writes one per block; the slots' sum is the same number);
//! `gradnorm` is both passes over a list of gradients.

/// Words of the norm state: `[norm, clip_scale, Σ g², max_norm, skip]` (skip is 0 here).
pub const NORM_STATE_LEN: usize = 5;

/// partials[slot_offset] = Σ grad[i]² over grad (n)
pub fn gradnorm_partial(partials: &mut [f64], grad: &[f64], n: usize, slot_offset: usize) {
    partials[slot_offset] = grad[..n].iter().map(|g| g * g).sum();
}

/// norm_state (5) = [norm, clip_scale, Σ g², max_norm, 0] with Σ g² = Σ partials[..n_partials],
/// norm = sqrt(Σ g²), clip_scale = min(1, max_norm / (norm + 1e-6)), or 1 if max_norm <= 0.
pub fn gradnorm_finish(norm_state: &mut [f64], partials: &[f64], n_partials: usize, max_norm: f64) {
    let sum_sq: f64 = partials[..n_partials].iter().sum();
    let norm = sum_sq.sqrt();
    let clip_scale = if max_norm > 0.0 {
        (max_norm / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    norm_state[..NORM_STATE_LEN].copy_from_slice(&[norm, clip_scale, sum_sq, max_norm, 0.0]);
}

/// norm_state (4) from every gradient of `grads`: `gradnorm_partial` per tensor, then
/// `gradnorm_finish` (the kernels' `GradNorm::record`).
pub fn gradnorm(norm_state: &mut [f64], grads: &[&[f64]], max_norm: f64) {
    let mut partials = vec![0f64; grads.len()];
    for (slot, g) in grads.iter().enumerate() {
        gradnorm_partial(&mut partials, g, g.len(), slot);
    }
    gradnorm_finish(norm_state, &partials, grads.len(), max_norm);
}
