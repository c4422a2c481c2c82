//! References for shaders/encoder.wgsl: token plus position embedding, and its
//! backward. Tokens must lie in [0, V); the reference panics on any other.

fn row(token: i32, v: usize) -> usize {
    match usize::try_from(token) {
        Ok(r) if r < v => r,
        _ => panic!("token {token} outside the vocabulary [0, {v})"),
    }
}

/// out (B, T, C) = wte (V, C)[tokens (B, T)] + wpe (maxT, C)[t]
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(
    out: &mut [f64],
    tokens: &[i32],
    wte: &[f64],
    wpe: &[f64],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) {
    for bt in 0..b * t {
        let r = row(tokens[bt], v);
        let pos = bt % t;
        for i in 0..c {
            out[bt * c + i] = wte[r * c + i] + wpe[pos * c + i];
        }
    }
}

/// dwte (V, C)[tokens (B, T)] += dout (B, T, C); dwpe (maxT, C)[t] += dout[b, t], in
/// position order.
#[allow(clippy::too_many_arguments)]
pub fn encoder_backward(
    dwte: &mut [f64],
    dwpe: &mut [f64],
    dout: &[f64],
    tokens: &[i32],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) {
    for bt in 0..b * t {
        let r = row(tokens[bt], v);
        let pos = bt % t;
        for i in 0..c {
            dwte[r * c + i] += dout[bt * c + i];
            dwpe[pos * c + i] += dout[bt * c + i];
        }
    }
}
