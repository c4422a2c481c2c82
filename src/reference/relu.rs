//! References for shaders/relu.wgsl: ReLU and its backward, with torch's gradient 0 at
//! x = 0. NaN stays NaN in the forward (as torch's relu) and passes no gradient.

/// out (N) = max(inp (N), 0)
pub fn relu_forward(out: &mut [f64], inp: &[f64], n: usize) {
    for i in 0..n {
        out[i] = if inp[i] <= 0.0 { 0.0 } else { inp[i] };
    }
}

/// dinp (N) += dout (N) · [inp (N) > 0]
pub fn relu_backward(dinp: &mut [f64], inp: &[f64], dout: &[f64], n: usize) {
    for i in 0..n {
        if inp[i] > 0.0 {
            dinp[i] += dout[i];
        }
    }
}
