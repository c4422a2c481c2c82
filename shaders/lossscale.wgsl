// lossscale.wgsl: dynamic loss scaling for the mixed path (f16 matmul inputs), as
// torch.cuda.amp.GradScaler, with its state on the GPU so a step needs no readback:
//   loss_scale_apply   loss_stats[2] *= scale: the backward's per-position weight
//                      (1/count, shaders/crossentropy.wgsl), so dlogits and every gradient
//                      after it carry the factor S, and small gradients survive their
//                      rounding to f16 at the matmul inputs.
//   loss_scale_update  after gradnorm_finish has summed the squares of the scaled
//                      gradients: if Σ g² is finite, the norm state is unscaled
//                      (norm / S, and clip_scale / S, which AdamW multiplies each
//                      gradient by), and after GROWTH_INTERVAL finite steps in a row S
//                      doubles; otherwise (an overflow to inf or NaN somewhere) the step
//                      is skipped (norm_state[4] = 1, which AdamW reads) and S halves.
// One invocation each. Launchers: src/kernels/lossscale.rs. CPU reference:
// src/reference/lossscale.rs.

// Mirrored by `LossScaleParams` in src/kernels/lossscale.rs.
struct LossScaleParams {
    growth_interval: u32,  // finite steps in a row before S doubles
    max_scale: f32,        // S never grows past this
    min_scale: f32,        // nor shrinks below this
    _pad: u32,
}

// scaler (4): [S, finite steps in a row, 1 if the last step was skipped, steps skipped]
@group(0) @binding(0) var<storage, read_write> ap_stats: array<f32>;  // (4): [mean, count, 1/count, sum]
@group(0) @binding(1) var<storage, read> ap_scaler: array<f32>;       // (4) scaler

@compute @workgroup_size(1)
fn loss_scale_apply() {
    ap_stats[2] = ap_stats[2] * ap_scaler[0];
}

@group(0) @binding(0) var<storage, read_write> up_norm: array<f32>;    // (5): norm, clip_scale, Σ g², max_norm, skip
@group(0) @binding(1) var<storage, read_write> up_scaler: array<f32>;  // (4) scaler
@group(0) @binding(2) var<uniform> up_p: LossScaleParams;

@compute @workgroup_size(1)
fn loss_scale_update() {
    let s = up_scaler[0];
    let sum_sq = up_norm[2];
    // NaN fails both comparisons; inf fails the second.
    let finite = sum_sq >= 0.0 && sum_sq <= 3.0e38;
    if (finite) {
        let norm = sqrt(sum_sq) / s;
        let max_norm = up_norm[3];
        var clip = 1.0;
        if (max_norm > 0.0) { clip = min(1.0, max_norm / (norm + 1e-6)); }
        up_norm[0] = norm;
        up_norm[1] = clip / s;
        up_norm[4] = 0.0;
        var good = up_scaler[1] + 1.0;
        if (good >= f32(up_p.growth_interval)) {
            up_scaler[0] = min(s * 2.0, up_p.max_scale);
            good = 0.0;
        }
        up_scaler[1] = good;
        up_scaler[2] = 0.0;
    } else {
        up_norm[1] = 0.0;
        up_norm[4] = 1.0;
        up_scaler[0] = max(s * 0.5, up_p.min_scale);
        up_scaler[1] = 0.0;
        up_scaler[2] = 1.0;
        up_scaler[3] = up_scaler[3] + 1.0;
    }
}
