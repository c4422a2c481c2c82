//! References for shaders/gelu.wgsl: GELU with the tanh approximation (Hugging Face
//! `gelu_new`) and the exact GELU x·Φ(x) (torch `nn.GELU()`, BERT), each with its
//! backward, and the f64 [`erf`] / [`erfc`] the exact one needs (std has none). Unlike
//! the kernels, no clamps: f64's tanh and these erfs hold at any argument.

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

const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI; // 2/√π
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7; // 1/√(2π)

/// Where [`erf`] and [`erfc`] switch from the series to the continued fraction.
const SERIES_END: f64 = 2.0;

/// erf(x) = 2/√π·exp(−x²)·Σₙ 2ⁿ·x²ⁿ⁺¹/(1·3·…·(2n+1)) for |x| < 2: every term is
/// positive, so nothing cancels; stops once a term no longer moves the sum.
fn erf_series(x: f64) -> f64 {
    let x2 = x * x;
    let (mut term, mut sum) = (x, x);
    let mut n = 0.0;
    while term.abs() > 1e-17 * sum.abs() {
        n += 1.0;
        term *= 2.0 * x2 / (2.0 * n + 1.0);
        sum += term;
    }
    FRAC_2_SQRT_PI * (-x2).exp() * sum
}

/// erfc(x) for x ≥ 2 by its continued fraction
///   erfc(x) = exp(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))),
/// evaluated from the 100th level up (converged to f64 from x = 2 on, for any x).
fn erfc_fraction(x: f64) -> f64 {
    let mut f = x;
    for k in (1..=100).rev() {
        f = x + 0.5 * k as f64 / f;
    }
    FRAC_2_SQRT_PI * 0.5 * (-x * x).exp() / f
}

/// The error function, to ~1e-15 absolute (relative near 0).
pub fn erf(x: f64) -> f64 {
    if x.abs() < SERIES_END {
        erf_series(x)
    } else {
        (1.0 - erfc_fraction(x.abs())).copysign(x)
    }
}

/// The complementary error function 1 − erf(x), to ~1e-15 relative for x ≥ 2 (so the
/// far tail keeps its digits) and ~1e-16 absolute below.
pub fn erfc(x: f64) -> f64 {
    if x >= SERIES_END {
        erfc_fraction(x)
    } else if x <= -SERIES_END {
        2.0 - erfc_fraction(-x)
    } else {
        1.0 - erf_series(x)
    }
}

/// Φ(x) = 0.5·erfc(−x/√2), the standard normal CDF.
fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// out (N) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)) for x = inp (N)
pub fn gelu_erf_forward(out: &mut [f64], inp: &[f64], n: usize) {
    for i in 0..n {
        out[i] = inp[i] * normal_cdf(inp[i]);
    }
}

/// dinp (N) += dout (N) · (Φ(x) + x·φ(x)) for x = inp (N), φ(x) = exp(−x²/2)/√(2π)
pub fn gelu_erf_backward(dinp: &mut [f64], inp: &[f64], dout: &[f64], n: usize) {
    for i in 0..n {
        let x = inp[i];
        let local_grad = normal_cdf(x) + x * INV_SQRT_2PI * (-0.5 * x * x).exp();
        dinp[i] += local_grad * dout[i];
    }
}
