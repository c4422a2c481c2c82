//! References for shaders/layernorm.wgsl: layer normalisation over the channels of each
//! row, two-pass (mean, then variance of x − mean), and its backward; and both fused
//! with the residual add before them, here simply the unfused references in turn.

use super::residual::{residual_backward, residual_forward};

/// out (B, T, C) = (inp − mean)·rstd·weight (C) + bias (C) per row of inp (B, T, C);
/// writes mean (B, T) and rstd (B, T) = 1/√(var + eps).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f64],
    mean: &mut [f64],
    rstd: &mut [f64],
    inp: &[f64],
    weight: &[f64],
    bias: &[f64],
    b: usize,
    t: usize,
    c: usize,
    eps: f64,
) {
    for row in 0..b * t {
        let x = &inp[row * c..(row + 1) * c];
        let m = x.iter().sum::<f64>() / c as f64;
        let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / c as f64;
        let r = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            out[row * c + i] = (x[i] - m) * r * weight[i] + bias[i];
        }
        mean[row] = m;
        rstd[row] = r;
    }
}

/// res (B, T, C) = x (B, T, C) + sub (B, T, C); then [`layernorm_forward`] of res into
/// out (B, T, C), mean (B, T), rstd (B, T).
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_forward(
    res: &mut [f64],
    out: &mut [f64],
    mean: &mut [f64],
    rstd: &mut [f64],
    x: &[f64],
    sub: &[f64],
    weight: &[f64],
    bias: &[f64],
    b: usize,
    t: usize,
    c: usize,
    eps: f64,
) {
    residual_forward(res, x, sub, b * t * c);
    layernorm_forward(out, mean, rstd, res, weight, bias, b, t, c, eps);
}

/// dinp (B, T, C), dweight (C), dbias (C) += the gradients of layernorm_forward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f64],
    dweight: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    inp: &[f64],
    weight: &[f64],
    mean: &[f64],
    rstd: &[f64],
    b: usize,
    t: usize,
    c: usize,
) {
    for row in 0..b * t {
        let (m, r) = (mean[row], rstd[row]);
        let x = &inp[row * c..(row + 1) * c];
        let d = &dout[row * c..(row + 1) * c];
        let norm = |i: usize| (x[i] - m) * r;
        let mut g_mean = 0.0;
        let mut gn_mean = 0.0;
        for i in 0..c {
            g_mean += weight[i] * d[i];
            gn_mean += weight[i] * d[i] * norm(i);
        }
        g_mean /= c as f64;
        gn_mean /= c as f64;
        for i in 0..c {
            dbias[i] += d[i];
            dweight[i] += norm(i) * d[i];
            dinp[row * c + i] += (weight[i] * d[i] - g_mean - norm(i) * gn_mean) * r;
        }
    }
}

/// dres (B, T, C), dweight (C), dbias (C) += [`layernorm_backward`]'s gradients from
/// dout (B, T, C); then dx (B, T, C) += dres and dsub (B, T, C) += dres.
#[allow(clippy::too_many_arguments)]
pub fn residual_layernorm_backward(
    dx: &mut [f64],
    dsub: &mut [f64],
    dres: &mut [f64],
    dweight: &mut [f64],
    dbias: &mut [f64],
    dout: &[f64],
    res: &[f64],
    weight: &[f64],
    mean: &[f64],
    rstd: &[f64],
    b: usize,
    t: usize,
    c: usize,
) {
    layernorm_backward(dres, dweight, dbias, dout, res, weight, mean, rstd, b, t, c);
    residual_backward(dx, dsub, dres, b * t * c);
}
