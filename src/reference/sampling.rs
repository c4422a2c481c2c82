//! References for shaders/sampling.wgsl: softmax with temperature, argmax, top-k and
//! drawing a token (temperature, top-k, top-p, a counter-based random number) over rows
//! of logits (B, V). Rows are ranked by (value descending, index ascending), so ties go
//! to the lowest index, as on the GPU; -inf is an ordinary value. NaN is not handled.
//! The draw's random number is the kernel's exactly (the same integer hash); the
//! probabilities are computed in f64.

use std::cmp::Ordering;

use crate::kernels::sampling::SampleSettings;

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

/// PCG's output permutation as a hash, as `pcg_hash` in shaders/sampling.wgsl.
pub fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747796405).wrapping_add(2891336453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277803737);
    (word >> 22) ^ word
}

/// The draw's U in [0, 1) for (seed, counter), bit for bit the kernel's `uniform_draw`.
pub fn uniform_draw(seed: u64, counter: u32) -> f64 {
    let h = pcg_hash(pcg_hash(pcg_hash(counter) ^ seed as u32) ^ (seed >> 32) as u32);
    (h >> 8) as f64 / 16777216.0
}

/// The kernel's order-preserving key of a logit (compared as the f32 it came from).
fn order_key(x: f64) -> u32 {
    let u = (x as f32).to_bits();
    if u & 0x8000_0000 != 0 {
        !u
    } else {
        u | 0x8000_0000
    }
}

/// probs (B, V) = the distribution `sample_forward` draws each row from: for greedy
/// settings (temperature 0) all mass on the argmax; otherwise exp((x - max) / temperature)
/// over the columns top-k and then top-p keep, normalised (see shaders/sampling.wgsl).
pub fn sample_distribution(
    probs: &mut [f64],
    logits: &[f64],
    settings: &[SampleSettings],
    b: usize,
    v: usize,
) {
    for r in 0..b {
        let row = &logits[r * v..(r + 1) * v];
        let out = &mut probs[r * v..(r + 1) * v];
        let s = settings[r];
        out.fill(0.0);
        if s.temperature <= 0.0 {
            let mut idx = [0u32];
            argmax_forward(&mut idx, row, 1, v);
            out[idx[0] as usize] = 1.0;
            continue;
        }
        let t = s.temperature as f64;
        let xmax = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = row.iter().map(|&x| ((x - xmax) / t).exp()).collect();
        let keys: Vec<u32> = row.iter().map(|&x| order_key(x)).collect();
        // Columns by key, descending: mass(u) for u = a column's key is the sum over the
        // columns up to the last one with that key.
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&i, &j| keys[j].cmp(&keys[i]));
        let k = s.top_k as usize;
        let kth = if k > 0 && k < v {
            keys[order[k - 1]]
        } else {
            0
        };
        let mass = |u: u32| -> f64 { (0..v).filter(|&i| keys[i] >= u).map(|i| w[i]).sum() };
        let mut cut = kth;
        if s.top_p < 1.0 {
            let target = s.top_p as f64 * mass(kth);
            // The largest key at or above kth whose mass still reaches the target.
            let mut acc = 0.0;
            for (n, &i) in order.iter().enumerate() {
                acc += w[i];
                let group_ends = n + 1 == v || keys[order[n + 1]] != keys[i];
                if group_ends && acc >= target {
                    cut = keys[i].max(kth);
                    break;
                }
            }
        }
        let z = mass(cut);
        for i in 0..v {
            if keys[i] >= cut {
                out[i] = w[i] / z;
            }
        }
    }
}

/// indices (B) = each row's token drawn as `sample_forward` draws it: with U from
/// [`uniform_draw`], the first column whose cumulative probability (index order) exceeds U.
pub fn sample_forward(
    indices: &mut [u32],
    logits: &[f64],
    settings: &[SampleSettings],
    b: usize,
    v: usize,
) {
    let mut probs = vec![0f64; b * v];
    sample_distribution(&mut probs, logits, settings, b, v);
    for r in 0..b {
        let p = &probs[r * v..(r + 1) * v];
        let u = uniform_draw(settings[r].seed(), settings[r].counter);
        let mut acc = 0.0;
        let mut pick = None;
        for (i, &pi) in p.iter().enumerate() {
            if pi > 0.0 {
                acc += pi;
                pick = Some(i);
                if acc > u {
                    break;
                }
            }
        }
        indices[r] = pick.expect("a row keeps at least its largest logit") as u32;
    }
}
