//! References for shaders/attention.wgsl: causal multi-head self-attention as in GPT-2,
//! in f64. The forward saves, like the kernel, only each row's log-sum-exp (stats); the
//! backward recomputes the probabilities from it, so the two take the same arguments as
//! their launchers. Written per (batch, head) with the scores of one row at a time.

/// The scaled scores q_t · k_t' / √HS of one query row t against keys 0..=t.
fn scores(qkv: &[f64], b: usize, t: usize, tq: usize, h: usize, c: usize, hs: usize) -> Vec<f64> {
    let scale = 1.0 / (hs as f64).sqrt();
    let row = |tt: usize| (b * t + tt) * 3 * c + h * hs;
    let q = &qkv[row(tq)..row(tq) + hs];
    (0..=tq)
        .map(|tk| {
            let k = &qkv[row(tk) + c..row(tk) + c + hs];
            scale * q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
        })
        .collect()
}

/// out (B, T, C), stats (B, NH, T) = causal self-attention of qkv (B, T, 3C): q, k, v at
/// channel offsets 0, C, 2C; head h on channels [h·HS, (h+1)·HS). stats holds each
/// row's log Σ_t' exp(score).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f64],
    stats: &mut [f64],
    qkv: &[f64],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    for bb in 0..b {
        for h in 0..nh {
            for tq in 0..t {
                let s = scores(qkv, bb, t, tq, h, c, hs);
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                let o = (bb * t + tq) * c + h * hs;
                for i in 0..hs {
                    out[o + i] = (0..=tq)
                        .map(|tk| e[tk] / sum * qkv[(bb * t + tk) * 3 * c + 2 * c + h * hs + i])
                        .sum();
                }
                stats[(bb * nh + h) * t + tq] = max + sum.ln();
            }
        }
    }
}

/// dqkv (B, T, 3C) += the gradient of attention_forward, given dout (B, T, C), its input
/// qkv and its outputs out and stats. With p = exp(score - stats), dp = dout_t · v_t' and
/// D_t = dout_t · out_t (per head): ds = p (dp - D_t); dq_t += ds k_t' / √HS,
/// dk_t' += ds q_t / √HS, dv_t' += p dout_t.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f64],
    dout: &[f64],
    qkv: &[f64],
    out: &[f64],
    stats: &[f64],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    for bb in 0..b {
        for h in 0..nh {
            let qkv_row = |tt: usize| (bb * t + tt) * 3 * c + h * hs;
            let out_row = |tt: usize| (bb * t + tt) * c + h * hs;
            for tq in 0..t {
                let s = scores(qkv, bb, t, tq, h, c, hs);
                let lse = stats[(bb * nh + h) * t + tq];
                let (q, o) = (qkv_row(tq), out_row(tq));
                let d: f64 = (0..hs).map(|i| dout[o + i] * out[o + i]).sum();
                for (tk, &score) in s.iter().enumerate() {
                    let p = (score - lse).exp();
                    let (k, v) = (qkv_row(tk) + c, qkv_row(tk) + 2 * c);
                    let dp: f64 = (0..hs).map(|i| dout[o + i] * qkv[v + i]).sum();
                    let ds = p * (dp - d);
                    for i in 0..hs {
                        dqkv[q + i] += scale * ds * qkv[k + i];
                        dqkv[k + i] += scale * ds * qkv[q + i];
                        dqkv[v + i] += p * dout[o + i];
                    }
                }
            }
        }
    }
}
