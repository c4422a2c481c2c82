//! References for shaders/encoder.wgsl: the token embedding times a scale plus the
//! position embedding, and its backward; GPT-2's `encoder_*` are the scale-1 case with a
//! position gradient. Tokens must lie in [0, V); the reference panics on any other. The
//! sinusoidal table a model uploads as `pe` is host code, in `crate::kernels::encoder`.

fn row(token: i32, v: usize) -> usize {
    match usize::try_from(token) {
        Ok(r) if r < v => r,
        _ => panic!("token {token} outside the vocabulary [0, {v})"),
    }
}

/// out (B, T, C) = emb (V, C)[tokens (B, T)] · scale + pe (maxT, C)[t]
#[allow(clippy::too_many_arguments)]
pub fn embed_forward(
    out: &mut [f64],
    tokens: &[i32],
    emb: &[f64],
    pe: &[f64],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    scale: f64,
) {
    for bt in 0..b * t {
        let r = row(tokens[bt], v);
        let pos = bt % t;
        for i in 0..c {
            out[bt * c + i] = emb[r * c + i] * scale + pe[pos * c + i];
        }
    }
}

/// demb (V, C)[tokens (B, T)] += scale · dout (B, T, C); dpe (maxT, C)[t] += dout[b, t]
/// if given, in position order.
#[allow(clippy::too_many_arguments)]
pub fn embed_backward(
    demb: &mut [f64],
    mut dpe: Option<&mut [f64]>,
    dout: &[f64],
    tokens: &[i32],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    scale: f64,
) {
    for bt in 0..b * t {
        let r = row(tokens[bt], v);
        let pos = bt % t;
        for i in 0..c {
            demb[r * c + i] += scale * dout[bt * c + i];
            if let Some(dpe) = dpe.as_deref_mut() {
                dpe[pos * c + i] += dout[bt * c + i];
            }
        }
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
    embed_forward(out, tokens, wte, wpe, b, t, c, v, 1.0);
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
    embed_backward(dwte, Some(dwpe), dout, tokens, b, t, c, v, 1.0);
}
