//! CPU reference for shaders/cast.wgsl.

/// out (N) = inp (N) rounded to the nearest f16 (ties to even), widened back to f64.
pub fn cast_f32_to_f16(out: &mut [f64], inp: &[f64], n: usize) {
    for (o, &x) in out[..n].iter_mut().zip(&inp[..n]) {
        *o = half::f16::from_f64(x).to_f64();
    }
}
