//! Reference for shaders/matmul.wgsl, in f64: the layer's forward and backward and the
//! tied classifier's. Plain loops in one fixed order; no tiling, chunking or gemv path,
//! since those change how the GPU computes, not what.

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

/// The same product as [`matmul_forward`], which the GPU computes differently for
/// M ≤ GEMV_MAX_M rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gemv(
    out: &mut [f64],
    inp: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
    m: usize,
    k: usize,
    n: usize,
) {
    matmul_forward(out, inp, weight, bias, m, k, n);
}

/// Gradients of [`matmul_forward`], added into (`+=`) each:
/// dinp (M, K) += dout (M, N) · weightᵀ, dweight (K, N) += inpᵀ · dout,
/// dbias (N) += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: &mut [f64],
    dweight: &mut [f64],
    dbias: Option<&mut [f64]>,
    dout: &[f64],
    inp: &[f64],
    weight: &[f64],
    m: usize,
    k: usize,
    n: usize,
) {
    for i in 0..m {
        let drow = &dout[i * n..(i + 1) * n];
        for kk in 0..k {
            let wrow = &weight[kk * n..(kk + 1) * n];
            dinp[i * k + kk] += drow.iter().zip(wrow).map(|(d, w)| d * w).sum::<f64>();
            let a = inp[i * k + kk];
            for (dw, &d) in dweight[kk * n..(kk + 1) * n].iter_mut().zip(drow) {
                *dw += a * d;
            }
        }
    }
    if let Some(db) = dbias {
        matmul_backward_bias(db, dout, m, n);
    }
}

/// dbias (N) += Σ_m dout (M, N)
pub fn matmul_backward_bias(dbias: &mut [f64], dout: &[f64], m: usize, n: usize) {
    for i in 0..m {
        for (b, &d) in dbias.iter_mut().zip(&dout[i * n..(i + 1) * n]) {
            *b += d;
        }
    }
}

/// The tied classifier: logits (M, V) = x (M, C) · wte (V, C)ᵀ
pub fn classifier_forward(
    logits: &mut [f64],
    x: &[f64],
    wte: &[f64],
    m: usize,
    c: usize,
    v: usize,
) {
    for i in 0..m {
        let xrow = &x[i * c..(i + 1) * c];
        for (j, l) in logits[i * v..(i + 1) * v].iter_mut().enumerate() {
            let erow = &wte[j * c..(j + 1) * c];
            *l = xrow.iter().zip(erow).map(|(a, b)| a * b).sum();
        }
    }
}

/// Gradients of [`classifier_forward`], added into (`+=`) both:
/// dx (M, C) += dlogits (M, V) · wte (V, C), dwte (V, C) += dlogitsᵀ · x (M, C).
#[allow(clippy::too_many_arguments)]
pub fn classifier_backward(
    dx: &mut [f64],
    dwte: &mut [f64],
    dlogits: &[f64],
    x: &[f64],
    wte: &[f64],
    m: usize,
    c: usize,
    v: usize,
) {
    for i in 0..m {
        let xrow = &x[i * c..(i + 1) * c];
        let dxrow = &mut dx[i * c..(i + 1) * c];
        for j in 0..v {
            let d = dlogits[i * v + j];
            let erow = &wte[j * c..(j + 1) * c];
            for (g, &e) in dxrow.iter_mut().zip(erow) {
                *g += d * e;
            }
            for (g, &xv) in dwte[j * c..(j + 1) * c].iter_mut().zip(xrow) {
                *g += d * xv;
            }
        }
    }
}
