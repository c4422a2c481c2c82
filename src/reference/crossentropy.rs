//! References for shaders/crossentropy.wgsl: softmax cross-entropy over rows of logits
//! (B·T, V) with i32 targets, its mean over counted positions, and its gradient. Targets
//! equal to [`IGNORE_INDEX`] are not counted; other targets outside [0, V) give NaN, as
//! on the GPU. Like the kernels, the backward references WRITE dlogits (=), the one
//! exception to the `+=` convention of backward references.

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
fn row_stats(row: &[f64]) -> (f64, f64) {
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
                let (m, s) = row_stats(row);
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
                let (m, s) = row_stats(row);
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
