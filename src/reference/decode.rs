//! References for shaders/decode.wgsl: a forward pass over a KV cache, in f64. Each
//! batch row b feeds T positions starting at `pos[b]`, of which the first `n[b]` are
//! real; padded rows are zero (embed, attention), skipped (append) or never gathered.
//! Caches are (B, NH, maxT, HS). Tokens must lie in [0, V); the reference panics on any
//! other.

/// x (B, T, C) = wte (V, C)[tokens] + wpe (≥ maxT, C)[pos + i] for real rows, 0 for padding.
#[allow(clippy::too_many_arguments)]
pub fn decode_embed(
    out: &mut [f64],
    tokens: &[i32],
    wte: &[f64],
    wpe: &[f64],
    pos: &[usize],
    n: &[usize],
    b: usize,
    t: usize,
    c: usize,
    v: usize,
) {
    for bb in 0..b {
        for i in 0..t {
            let o = &mut out[(bb * t + i) * c..(bb * t + i + 1) * c];
            if i >= n[bb] {
                o.fill(0.0);
                continue;
            }
            let tok = tokens[bb * t + i];
            assert!(
                tok >= 0 && (tok as usize) < v,
                "token {tok} outside [0, {v})"
            );
            let (r, p) = (tok as usize, pos[bb] + i);
            for (ch, x) in o.iter_mut().enumerate() {
                *x = wte[r * c + ch] + wpe[p * c + ch];
            }
        }
    }
}

/// k_cache, v_cache (B, NH, maxT, HS)[b, h, pos + i] = the key and value of real row i of
/// qkv (B, T, 3C); everything else is left as it is.
#[allow(clippy::too_many_arguments)]
pub fn decode_append(
    k_cache: &mut [f64],
    v_cache: &mut [f64],
    qkv: &[f64],
    pos: &[usize],
    n: &[usize],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    max_t: usize,
) {
    let hs = c / nh;
    for bb in 0..b {
        for i in 0..n[bb] {
            let row = (bb * t + i) * 3 * c;
            for h in 0..nh {
                let dst = ((bb * nh + h) * max_t + pos[bb] + i) * hs;
                for d in 0..hs {
                    k_cache[dst + d] = qkv[row + c + h * hs + d];
                    v_cache[dst + d] = qkv[row + 2 * c + h * hs + d];
                }
            }
        }
    }
}

/// out (B, T, C): real row i's query (from qkv (B, T, 3C)) attends with softmax over the
/// cached keys at positions 0..=pos+i and averages their values; padded rows are 0.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    out: &mut [f64],
    qkv: &[f64],
    k_cache: &[f64],
    v_cache: &[f64],
    pos: &[usize],
    n: &[usize],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    max_t: usize,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    for bb in 0..b {
        for i in 0..t {
            for h in 0..nh {
                let o = (bb * t + i) * c + h * hs;
                if i >= n[bb] {
                    out[o..o + hs].fill(0.0);
                    continue;
                }
                let q = &qkv[(bb * t + i) * 3 * c + h * hs..][..hs];
                let base = (bb * nh + h) * max_t * hs;
                let s: Vec<f64> = (0..=pos[bb] + i)
                    .map(|tk| {
                        let k = &k_cache[base + tk * hs..][..hs];
                        scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hs {
                    out[o + d] = e
                        .iter()
                        .enumerate()
                        .map(|(tk, w)| w * v_cache[base + tk * hs + d])
                        .sum::<f64>()
                        / sum;
                }
            }
        }
    }
}

/// out (B, C) = x (B, T, C)[b, n[b] - 1].
pub fn decode_gather(out: &mut [f64], x: &[f64], n: &[usize], b: usize, t: usize, c: usize) {
    for bb in 0..b {
        let last = n[bb].clamp(1, t) - 1;
        out[bb * c..(bb + 1) * c].copy_from_slice(&x[(bb * t + last) * c..][..c]);
    }
}

/// logits (B, V) = x (B, C) · wte (V, C)ᵀ.
pub fn decode_logits(logits: &mut [f64], x: &[f64], wte: &[f64], b: usize, c: usize, v: usize) {
    for bb in 0..b {
        for r in 0..v {
            logits[bb * v + r] = (0..c).map(|ch| x[bb * c + ch] * wte[r * c + ch]).sum();
        }
    }
}
