//! References for shaders/crossentropy.wgsl: softmax cross-entropy over rows of logits
//! (B·T, V) with i32 targets, its mean over counted positions, and its gradient. Targets
//! equal to [`IGNORE_INDEX`] are not counted; other targets outside [0, V) give NaN, as
//! on the GPU. Like the kernels, the backward references WRITE dlogits (=), the one
//! exception to the `+=` convention of backward references. The `crossentropy_chunk_*`
//! references compute the same from chunks of Vc vocabulary columns, through running
//! per-row stats (B·T, 3) = [max, Σ exp(x - max), target's logit].

pub use crate::kernels::crossentropy::IGNORE_INDEX;

/// The target of position `n` as a column of a row of `v` logits; `None` if ignored,
/// `Some(None)` if invalid.
fn column(target: i32, v: usize) -> Option<Option<usize>> {
    if target == IGNORE_INDEX {
        None
    } else if target >= 0 && (target as usize) < v {
        Some(Some(target as usize))
    } else {
        Some(None)
    }
}

/// (max, Σ exp(x - max)) of one row.
fn max_sum_exp(row: &[f64]) -> (f64, f64) {
    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    (m, row.iter().map(|&x| (x - m).exp()).sum())
}

/// losses (B·T) = -log softmax(logits (B·T, V))[targets (B·T)]; 0 where ignored.
pub fn crossentropy_forward(
    losses: &mut [f64],
    logits: &[f64],
    targets: &[i32],
    bt: usize,
    v: usize,
) {
    for n in 0..bt {
        losses[n] = match column(targets[n], v) {
            None => 0.0,
            Some(None) => f64::NAN,
            Some(Some(t)) => {
                let row = &logits[n * v..(n + 1) * v];
                let (m, s) = max_sum_exp(row);
                (m - row[t]) + s.ln()
            }
        };
    }
}

/// stats (4) = [mean, count, 1/count, sum] of losses (B·T) over positions whose target is
/// not ignored; all 0 when none is.
pub fn crossentropy_mean(stats: &mut [f64], losses: &[f64], targets: &[i32], bt: usize) {
    let (mut sum, mut count) = (0.0, 0usize);
    for n in 0..bt {
        if targets[n] != IGNORE_INDEX {
            sum += losses[n];
            count += 1;
        }
    }
    let inv = if count > 0 { 1.0 / count as f64 } else { 0.0 };
    stats[..4].copy_from_slice(&[sum * inv, count as f64, inv, sum]);
}

/// dlogits (B·T, V) = (softmax(logits) - onehot(targets)) · stats[2] · grad_scale; zero
/// rows where ignored. Writes (=), does not add.
pub fn crossentropy_backward(
    dlogits: &mut [f64],
    logits: &[f64],
    targets: &[i32],
    stats: &[f64],
    bt: usize,
    v: usize,
    grad_scale: f64,
) {
    let dloss = stats[2] * grad_scale;
    for n in 0..bt {
        let row = &logits[n * v..(n + 1) * v];
        let out = &mut dlogits[n * v..(n + 1) * v];
        match column(targets[n], v) {
            None => out.fill(0.0),
            Some(t) => {
                let (m, s) = max_sum_exp(row);
                for (i, (d, &x)) in out.iter_mut().zip(row).enumerate() {
                    let onehot = if Some(i) == t { 1.0 } else { 0.0 };
                    *d = match t {
                        Some(_) => ((x - m).exp() / s - onehot) * dloss,
                        None => f64::NAN,
                    };
                }
            }
        }
    }
}

/// [`crossentropy_backward`] with dlogits written over logits (B·T, V).
pub fn crossentropy_backward_inplace(
    logits: &mut [f64],
    targets: &[i32],
    stats: &[f64],
    bt: usize,
    v: usize,
    grad_scale: f64,
) {
    let inp = logits[..bt * v].to_vec();
    crossentropy_backward(logits, &inp, targets, stats, bt, v, grad_scale);
}

/// Fold the logits chunk (B·T, Vc), columns [v0, v0 + Vc), into row_stats (B·T, 3) =
/// [max, Σ exp(x - max), target's logit] over the columns seen so far; the chunk at
/// v0 = 0 starts them. Rows whose target is ignored are left untouched.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_chunk_forward(
    row_stats: &mut [f64],
    logits: &[f64],
    targets: &[i32],
    bt: usize,
    v: usize,
    v0: usize,
    vc: usize,
) {
    assert!(
        vc > 0 && v0 + vc <= v,
        "columns {v0}..{} of V = {v}",
        v0 + vc
    );
    for n in 0..bt {
        if targets[n] == IGNORE_INDEX {
            continue;
        }
        let row = &logits[n * vc..(n + 1) * vc];
        let (mc, sc) = max_sum_exp(row);
        let st = &mut row_stats[n * 3..(n + 1) * 3];
        let (mut m, mut s, mut xt) = (mc, sc, 0.0);
        if v0 > 0 {
            m = st[0].max(mc);
            s = st[1] * (st[0] - m).exp() + sc * (mc - m).exp();
            xt = st[2];
        }
        let t = targets[n] as i64 - v0 as i64;
        if t >= 0 && (t as usize) < vc {
            xt = row[t as usize];
        }
        st.copy_from_slice(&[m, s, xt]);
    }
}

/// losses (B·T) = (max - logit[target]) + log Σ from row_stats (B·T, 3) after the last
/// chunk; 0 where ignored, NaN for a target outside [0, V).
pub fn crossentropy_chunk_finish(
    losses: &mut [f64],
    row_stats: &[f64],
    targets: &[i32],
    bt: usize,
    v: usize,
) {
    for n in 0..bt {
        let st = &row_stats[n * 3..(n + 1) * 3];
        losses[n] = match column(targets[n], v) {
            None => 0.0,
            Some(None) => f64::NAN,
            Some(Some(_)) => (st[0] - st[2]) + st[1].ln(),
        };
    }
}

/// The logits chunk (B·T, Vc), columns [v0, v0 + Vc), becomes its dlogits in place:
/// (exp(x - max) / Σ - onehot) · stats[2] · grad_scale with (max, Σ) from row_stats
/// (B·T, 3); zero rows where ignored. Writes (=), does not add.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_chunk_backward_inplace(
    logits: &mut [f64],
    targets: &[i32],
    row_stats: &[f64],
    stats: &[f64],
    bt: usize,
    v: usize,
    v0: usize,
    vc: usize,
    grad_scale: f64,
) {
    let dloss = stats[2] * grad_scale;
    for n in 0..bt {
        let (m, s) = (row_stats[n * 3], row_stats[n * 3 + 1]);
        let out = &mut logits[n * vc..(n + 1) * vc];
        match column(targets[n], v) {
            None => out.fill(0.0),
            Some(None) => out.fill(f64::NAN),
            Some(Some(t)) => {
                for (i, x) in out.iter_mut().enumerate() {
                    let onehot = if v0 + i == t { 1.0 } else { 0.0 };
                    *x = ((*x - m).exp() / s - onehot) * dloss;
                }
            }
        }
    }
}
