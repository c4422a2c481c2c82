//! Reference for shaders/matmul.wgsl.

/// out (M, N) = inp (M, K) · weight (K, N) + bias (N)
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    out: &mut [f64],
    inp: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        let row = &mut out[i * n..(i + 1) * n];
        match bias {
            Some(b) => row.copy_from_slice(b),
            None => row.fill(0.0),
        }
        for kk in 0..k {
            let a = inp[i * k + kk];
            for (r, &w) in row.iter_mut().zip(&weight[kk * n..(kk + 1) * n]) {
                *r += a * w;
            }
        }
    }
}
