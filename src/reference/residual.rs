//! References for shaders/residual.wgsl: the residual connection and its backward.

/// out (N) = inp1 (N) + inp2 (N)
pub fn residual_forward(out: &mut [f64], inp1: &[f64], inp2: &[f64], n: usize) {
    for i in 0..n {
        out[i] = inp1[i] + inp2[i];
    }
}

/// dinp1 (N) += dout (N); dinp2 (N) += dout (N)
pub fn residual_backward(dinp1: &mut [f64], dinp2: &mut [f64], dout: &[f64], n: usize) {
    for i in 0..n {
        dinp1[i] += dout[i];
        dinp2[i] += dout[i];
    }
}
