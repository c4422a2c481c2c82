//! References for shaders/sampling.wgsl: softmax with temperature, argmax and top-k over
//! rows of logits (B, V). Rows are ranked by (value descending, index ascending), so ties
//! go to the lowest index, as on the GPU; -inf is an ordinary value. NaN is not handled.

use std::cmp::Ordering;

/// Rank order of columns i, j of `row`: larger value first, then lower index.
fn rank(row: &[f64], i: usize, j: usize) -> Ordering {
    row[j]
        .partial_cmp(&row[i])
        .expect("sampling reference: NaN logit")
        .then(i.cmp(&j))
}

/// probs (B, V) = softmax(logits (B, V) / temperature) per row.
pub fn softmax_forward(probs: &mut [f64], logits: &[f64], b: usize, v: usize, temperature: f64) {
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |a, &x| a.max(x / temperature));
        let out = &mut probs[r * v..(r + 1) * v];
        for (p, &x) in out.iter_mut().zip(row) {
            *p = (x / temperature - m).exp();
        }
        let sum: f64 = out.iter().sum();
        out.iter_mut().for_each(|p| *p /= sum);
    }
}

/// indices (B) = the column of each row's largest logit (B, V); ties to the lowest.
pub fn argmax_forward(indices: &mut [u32], logits: &[f64], b: usize, v: usize) {
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        indices[r] = (0..v).min_by(|&i, &j| rank(row, i, j)).unwrap() as u32;
    }
}

/// values (B, K), indices (B, K) = each row's K largest logits (B, V) and their columns,
/// sorted descending, ties in increasing column order.
pub fn topk_forward(
    values: &mut [f64],
    indices: &mut [u32],
    logits: &[f64],
    b: usize,
    v: usize,
    k: usize,
) {
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&i, &j| rank(row, i, j));
        for (j, &i) in order[..k].iter().enumerate() {
            values[r * k + j] = row[i];
            indices[r * k + j] = i as u32;
        }
    }
}
