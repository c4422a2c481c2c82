//! References for shaders/mha.wgsl: general multi-head attention (torch.nn.
//! MultiheadAttention semantics: self- or cross-attention, optional causal mask, optional
//! key padding mask), in f64. q, k and v are read at the channels a
//! [`MhaLayout`](crate::kernels::mha::MhaLayout) gives. The forward saves, like the
//! kernel, only each row's log-sum-exp (stats); the backward recomputes the probabilities
//! from it, so the two take the same arguments as their launchers. A query with no
//! visible key gets out = 0, stats = -f32::MAX and no gradient. Written per (batch, head,
//! query row), in the same operation order as `reference::attention`, so the packed causal
//! unmasked case gives the very same bits as GPT-2's reference.

use crate::kernels::mha::MhaLayout;

/// The keys query `i` of batch row `b` sees: unpadded, and j ≤ i when causal.
fn visible(mask: Option<&[i32]>, b: usize, tk: usize, i: usize, causal: bool) -> Vec<usize> {
    let end = if causal { (i + 1).min(tk) } else { tk };
    (0..end)
        .filter(|&j| mask.is_none_or(|m| m[b * tk + j] == 0))
        .collect()
}

/// Indices of head h's q at query `i`, k and v at key `j`, and out at query `i`, of
/// batch row `b`.
struct Index {
    layout: MhaLayout,
    tq: usize,
    tk: usize,
    c: usize,
    hs: usize,
}

impl Index {
    fn q(&self, b: usize, i: usize, h: usize) -> usize {
        (b * self.tq + i) * self.layout.q_stride + self.layout.q_off + h * self.hs
    }
    fn k(&self, b: usize, j: usize, h: usize) -> usize {
        (b * self.tk + j) * self.layout.kv_stride + self.layout.k_off + h * self.hs
    }
    fn v(&self, b: usize, j: usize, h: usize) -> usize {
        (b * self.tk + j) * self.layout.kv_stride + self.layout.v_off + h * self.hs
    }
    fn out(&self, b: usize, i: usize, h: usize) -> usize {
        (b * self.tq + i) * self.c + h * self.hs
    }
}

/// The scaled scores q_i · k_j / √HS of query i against the keys `keys`.
fn scores(
    q: &[f64],
    kv: &[f64],
    x: &Index,
    b: usize,
    i: usize,
    h: usize,
    keys: &[usize],
) -> Vec<f64> {
    let hs = x.hs;
    let scale = 1.0 / (hs as f64).sqrt();
    let qi = &q[x.q(b, i, h)..x.q(b, i, h) + hs];
    keys.iter()
        .map(|&j| {
            let k = &kv[x.k(b, j, h)..x.k(b, j, h) + hs];
            scale * qi.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
        })
        .collect()
}

/// out (B, Tq, C), stats (B, NH, Tq) = multi-head attention of q (B, Tq, q_stride) over
/// kv (B, Tk, kv_stride) at the channels of `layout`; `mask` (B, Tk), nonzero = padding,
/// hides keys from every query of their batch row, `causal` (Tq = Tk) hides keys j > i.
/// stats holds each row's log Σ_j exp(score) over its visible keys (-f32::MAX if none).
#[allow(clippy::too_many_arguments)]
pub fn mha_forward(
    out: &mut [f64],
    stats: &mut [f64],
    q: &[f64],
    kv: &[f64],
    mask: Option<&[i32]>,
    layout: MhaLayout,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
) {
    let hs = c / nh;
    let x = Index {
        layout,
        tq,
        tk,
        c,
        hs,
    };
    for bb in 0..b {
        for h in 0..nh {
            for i in 0..tq {
                let keys = visible(mask, bb, tk, i, causal);
                let o = x.out(bb, i, h);
                if keys.is_empty() {
                    out[o..o + hs].fill(0.0);
                    stats[(bb * nh + h) * tq + i] = f32::MIN as f64;
                    continue;
                }
                let s = scores(q, kv, &x, bb, i, h, &keys);
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for ii in 0..hs {
                    out[o + ii] = keys
                        .iter()
                        .enumerate()
                        .map(|(n, &j)| e[n] / sum * kv[x.v(bb, j, h) + ii])
                        .sum();
                }
                stats[(bb * nh + h) * tq + i] = max + sum.ln();
            }
        }
    }
}

/// dq (layout of q) += the gradient of mha_forward with respect to q and dkv (layout of
/// kv) += that with respect to k and v, given dout (B, Tq, C), its inputs q, kv, mask and
/// its outputs out and stats. With p = exp(score - stats), dp = dout_i · v_j and
/// D_i = dout_i · out_i (per head), over visible pairs: ds = p (dp - D_i);
/// dq_i += ds k_j / √HS, dk_j += ds q_i / √HS, dv_j += p dout_i. Only q's channels of dq
/// and k's and v's of dkv are touched. For self-attention, where the kernels add both
/// into one dqkv, pass two buffers (Rust allows no aliasing) and take q's channels from
/// the first, k's and v's from the second (or add them: each is zero elsewhere).
#[allow(clippy::too_many_arguments)]
pub fn mha_backward(
    dq: &mut [f64],
    dkv: &mut [f64],
    dout: &[f64],
    q: &[f64],
    kv: &[f64],
    mask: Option<&[i32]>,
    out: &[f64],
    stats: &[f64],
    layout: MhaLayout,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let x = Index {
        layout,
        tq,
        tk,
        c,
        hs,
    };
    for bb in 0..b {
        for h in 0..nh {
            for i in 0..tq {
                let keys = visible(mask, bb, tk, i, causal);
                let s = scores(q, kv, &x, bb, i, h, &keys);
                let lse = stats[(bb * nh + h) * tq + i];
                let (qi, o) = (x.q(bb, i, h), x.out(bb, i, h));
                let d: f64 = (0..hs).map(|ii| dout[o + ii] * out[o + ii]).sum();
                for (&j, &score) in keys.iter().zip(&s) {
                    let p = (score - lse).exp();
                    let (k, v) = (x.k(bb, j, h), x.v(bb, j, h));
                    let dp: f64 = (0..hs).map(|ii| dout[o + ii] * kv[v + ii]).sum();
                    let ds = p * (dp - d);
                    for ii in 0..hs {
                        dq[qi + ii] += scale * ds * kv[k + ii];
                        dkv[k + ii] += scale * ds * q[qi + ii];
                        dkv[v + ii] += p * dout[o + ii];
                    }
                }
            }
        }
    }
}
