//! Reference for shaders/lossscale.wgsl, in f64: dynamic loss scaling as
//! `torch.cuda.amp.GradScaler` (state `[scale, finite steps in a row, last skipped,
//! steps skipped]`).

/// loss_stats[2] *= scaler[0]
pub fn loss_scale_apply(loss_stats: &mut [f64], scaler: &[f64]) {
    loss_stats[2] *= scaler[0];
}

/// Unscale norm_state `[norm, clip_scale, Σ g², max_norm, skip]` of gradients carrying
/// S = scaler[0] and count a finite step (S doubles, up to `max_scale`, every
/// `growth_interval` of them in a row), or flag the step skipped and halve S (down to
/// `min_scale`) when Σ g² is not finite.
pub fn loss_scale_update(
    norm_state: &mut [f64],
    scaler: &mut [f64],
    growth_interval: u32,
    max_scale: f64,
    min_scale: f64,
) {
    let s = scaler[0];
    let sum_sq = norm_state[2];
    if sum_sq.is_finite() && sum_sq <= 3.0e38 {
        let norm = sum_sq.sqrt() / s;
        let max_norm = norm_state[3];
        let clip = if max_norm > 0.0 {
            (max_norm / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        norm_state[0] = norm;
        norm_state[1] = clip / s;
        norm_state[4] = 0.0;
        let mut good = scaler[1] + 1.0;
        if good >= growth_interval as f64 {
            scaler[0] = (s * 2.0).min(max_scale);
            good = 0.0;
        }
        scaler[1] = good;
        scaler[2] = 0.0;
    } else {
        norm_state[1] = 0.0;
        norm_state[4] = 1.0;
        scaler[0] = (s * 0.5).max(min_scale);
        scaler[1] = 0.0;
        scaler[2] = 1.0;
        scaler[3] += 1.0;
    }
}
