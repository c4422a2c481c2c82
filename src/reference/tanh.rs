//! References for shaders/tanh.wgsl: tanh, and its backward from the forward's output
//! (as torch's). f64's tanh needs no clamp: it is ±1 for large |x| and never NaN.

/// out (N) = tanh(inp (N))
pub fn tanh_forward(out: &mut [f64], inp: &[f64], n: usize) {
    for i in 0..n {
        out[i] = inp[i].tanh();
    }
}

/// dinp (N) += dout (N) · (1 − out²), out (N) = tanh(inp)
pub fn tanh_backward(dinp: &mut [f64], out: &[f64], dout: &[f64], n: usize) {
    for i in 0..n {
        dinp[i] += dout[i] * (1.0 - out[i] * out[i]);
    }
}
