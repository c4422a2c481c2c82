//! References for shaders/dropout.wgsl: the same integer hash, bit for bit, so the CPU
//! draws exactly the GPU's mask, and the same f32 scale. Like the kernels, both work in
//! place and the backward WRITES its gradient, an exception to the `+=` convention.

pub use crate::kernels::dropout::{dropout_scale, dropout_threshold};

/// Chris Wellons' lowbias32, as in shaders/dropout.wgsl.
pub fn lowbias32(x: u32) -> u32 {
    let mut h = x;
    h ^= h >> 16;
    h = h.wrapping_mul(0x7feb_352d);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846c_a68b);
    h ^= h >> 16;
    h
}

/// The two stream keys of (seed, counter, site), as `dropout_stream` in the shader.
fn stream(seed: u64, counter: u32, site: u32) -> (u32, u32) {
    let mut h = lowbias32(seed as u32 ^ 0x243f_6a88);
    h = lowbias32(h ^ (seed >> 32) as u32);
    h = lowbias32(h ^ counter);
    let k1 = lowbias32(h ^ site);
    (k1, lowbias32(k1 ^ 0x85a3_08d3))
}

/// Whether element `i` survives dropout at rate `p` for (seed, counter, site).
pub fn dropout_keep(seed: u64, counter: u32, site: u32, i: u32, p: f32) -> bool {
    let (k1, k2) = stream(seed, counter, site);
    (lowbias32(lowbias32(i ^ k1) ^ k2) >> 8) >= dropout_threshold(p)
}

/// x (n) = keep ? x · (1 / (1 - p) as f32) : 0, in place; (seed, counter) are the
/// launcher's `DropoutStep`.
pub fn dropout_forward(x: &mut [f64], seed: u64, counter: u32, n: usize, p: f32, site: u32) {
    let scale = dropout_scale(p) as f64;
    for (i, v) in x[..n].iter_mut().enumerate() {
        *v = if dropout_keep(seed, counter, site, i as u32, p) {
            *v * scale
        } else {
            0.0
        };
    }
}

/// dx (n) = keep ? dx · (1 / (1 - p) as f32) : 0, in place, with the forward's mask.
pub fn dropout_backward(dx: &mut [f64], seed: u64, counter: u32, n: usize, p: f32, site: u32) {
    dropout_forward(dx, seed, counter, n, p, site);
}
