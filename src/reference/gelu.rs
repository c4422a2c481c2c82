//! References for shaders/gelu.wgsl: GELU, tanh approximation (Hugging Face `gelu_new`),
//! and its backward. Unlike the kernel, no clamp: f64's tanh is exact at any argument.

const SCALE: f64 = 0.797_884_560_802_865_4; // √(2/π)
const CUBIC: f64 = 0.044715;

/// out (N) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) for x = inp (N)
pub fn gelu_forward(out: &mut [f64], inp: &[f64], n: usize) {
    for i in 0..n {
        let x = inp[i];
        let u = SCALE * (x + CUBIC * x * x * x);
        out[i] = 0.5 * x * (1.0 + u.tanh());
    }
}

/// dinp (N) += gelu'(inp (N)) · dout (N)
pub fn gelu_backward(dinp: &mut [f64], inp: &[f64], dout: &[f64], n: usize) {
    for i in 0..n {
        let x = inp[i];
        let u = SCALE * (x + CUBIC * x * x * x);
        let th = u.tanh();
        let sech2 = 1.0 - th * th;
        let du = SCALE * (1.0 + 3.0 * CUBIC * x * x);
        let local_grad = 0.5 * (1.0 + th) + 0.5 * x * sech2 * du;
        dinp[i] += local_grad * dout[i];
    }
}
