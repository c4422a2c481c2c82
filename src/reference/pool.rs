//! References for shaders/pool.wgsl: masked mean pooling over positions and L2
//! normalisation of rows, as sentence-transformers makes sentence embeddings. Forward
//! only (embeddings are inference). In f64, so the norm neither overflows nor underflows
//! where the kernel's f32 Σ x² would.

/// out (B, C) = Σ_t mask[b,t]·x[b,t,:] / max(Σ_t mask[b,t], 1e-9), x (B, T, C), mask
/// (B, T); positions with mask 0 are skipped (as the kernel), a row with none gives 0s.
pub fn mean_pool_forward(out: &mut [f64], x: &[f64], mask: &[i32], b: usize, t: usize, c: usize) {
    for bi in 0..b {
        let mut count = 0.0;
        let mut sum = vec![0f64; c];
        for ti in 0..t {
            let m = mask[bi * t + ti];
            if m == 0 {
                continue;
            }
            let w = m as f64;
            count += w;
            for (s, v) in sum.iter_mut().zip(&x[(bi * t + ti) * c..][..c]) {
                *s += w * v;
            }
        }
        for (o, s) in out[bi * c..][..c].iter_mut().zip(&sum) {
            *o = s / f64::max(count, 1e-9);
        }
    }
}

/// out (B, C) = x / max(‖x‖₂, 1e-12) per row of x (B, C)
pub fn l2norm_forward(out: &mut [f64], x: &[f64], b: usize, c: usize) {
    for bi in 0..b {
        let row = &x[bi * c..][..c];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (o, v) in out[bi * c..][..c].iter_mut().zip(row) {
            *o = v / norm.max(1e-12);
        }
    }
}
