//! Reference for shaders/matmul.wgsl. Accumulates in f64 so it is a better answer than
//! the kernel's, not a copy of its rounding.

/// out (M, N) = inp (M, K) · weight (K, N) + bias (N)
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    let mut row = vec![0f64; n];
    for i in 0..m {
        match bias {
            Some(b) => row.iter_mut().zip(b).for_each(|(r, &b)| *r = b as f64),
            None => row.iter_mut().for_each(|r| *r = 0.0),
        }
        for kk in 0..k {
            let a = inp[i * k + kk] as f64;
            let w = &weight[kk * n..(kk + 1) * n];
            for (r, &w) in row.iter_mut().zip(w) {
                *r += a * w as f64;
            }
        }
        for (o, r) in out[i * n..(i + 1) * n].iter_mut().zip(&row) {
            *o = *r as f32;
        }
    }
}
