//! softmax_forward, argmax_forward and topk_forward against their CPU references at
//! V = 101, 509, 50257 and K = 1, 5, 40, 64, on rows with ties and -inf entries, rows
//! split into several binding chunks, the largest K, bad arguments and determinism.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::sampling::{argmax_forward, softmax_forward, topk_forward, TOPK_MAX_K};
use wgformer::reference::sampling as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, test_contexts, to_f64};

const VS: [usize; 3] = [101, 509, 50257];
const KS: [usize; 4] = [1, 5, 40, 64];
const TEMPERATURES: [f32; 3] = [1.0, 0.7, 1.6];

/// Rows of logits of four kinds, by row index mod 4: continuous; few distinct values (many
/// ties) with some -inf; all but 3 entries -inf (top-k must return -inf in index order);
/// every entry equal.
fn logits(rng: &mut Rng, b: usize, v: usize) -> Vec<f32> {
    let mut x = vec![0f32; b * v];
    for (r, row) in x.chunks_mut(v).enumerate() {
        match r % 4 {
            0 => row.iter_mut().for_each(|e| *e = 3.0 * rng.normal()),
            1 => row.iter_mut().for_each(|e| {
                *e = if rng.uniform() < 0.1 {
                    f32::NEG_INFINITY
                } else {
                    (2.0 * rng.normal()).round() / 2.0
                }
            }),
            2 => {
                row.fill(f32::NEG_INFINITY);
                for _ in 0..3 {
                    row[rng.below(v as u64) as usize] = rng.normal();
                }
            }
            _ => row.fill(0.25),
        }
    }
    x
}

struct Outputs {
    probs: Vec<f32>,
    argmax: Vec<u32>,
    values: Vec<f32>,
    indices: Vec<u32>,
}

fn run(ctx: &GpuContext, x: &[f32], b: usize, v: usize, k: usize, temperature: f32) -> Outputs {
    let tl = Tensor::from_f32(ctx, "logits", &[b, v], x).unwrap();
    let probs = Tensor::zeros(ctx, "probs", &[b, v], DType::F32).unwrap();
    let argmax = Tensor::zeros(ctx, "argmax", &[b], DType::U32).unwrap();
    let values = Tensor::zeros(ctx, "topk values", &[b, k], DType::F32).unwrap();
    let indices = Tensor::zeros(ctx, "topk indices", &[b, k], DType::U32).unwrap();
    let mut s = Schedule::new("sampling");
    softmax_forward(&mut s, ctx, &probs, &tl, b, v, temperature).unwrap();
    argmax_forward(&mut s, ctx, &argmax, &tl, b, v).unwrap();
    topk_forward(&mut s, ctx, &values, &indices, &tl, b, v, k).unwrap();
    s.run(ctx);
    Outputs {
        probs: ctx.block_on(probs.read_f32(ctx)).unwrap(),
        argmax: ctx.block_on(argmax.read::<u32>(ctx)).unwrap(),
        values: ctx.block_on(values.read_f32(ctx)).unwrap(),
        indices: ctx.block_on(indices.read::<u32>(ctx)).unwrap(),
    }
}

fn check(name: &str, got: &Outputs, x: &[f32], b: usize, v: usize, k: usize, temperature: f32) {
    let x = to_f64(x);
    let mut probs = vec![0f64; b * v];
    cpu::softmax_forward(&mut probs, &x, b, v, temperature as f64);
    // Probabilities are at most 1 and mostly ~1/V: an absolute 1e-4 would accept anything,
    // so the absolute tolerance is 1e-7 (f32 rounding of exp and of x / temperature).
    let c = assert_close64(&format!("{name} probs"), &got.probs, &probs, 1e-7, 1e-4);
    eprintln!("{name}: probs max |Δ| {:e}", c.max_abs);
    for (r, row) in got.probs.chunks(v).enumerate() {
        let sum: f64 = row.iter().map(|&p| p as f64).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{name}: row {r} sums to {sum}");
    }
    let mut argmax = vec![0u32; b];
    cpu::argmax_forward(&mut argmax, &x, b, v);
    assert_eq!(got.argmax, argmax, "{name}: argmax");
    let mut values = vec![0f64; b * k];
    let mut indices = vec![0u32; b * k];
    cpu::topk_forward(&mut values, &mut indices, &x, b, v, k);
    assert_eq!(got.indices, indices, "{name}: topk indices");
    let values: Vec<f32> = values.iter().map(|&e| e as f32).collect();
    assert_eq!(got.values, values, "{name}: topk values");
}

#[test]
fn sampling_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(31);
        for v in VS {
            for (n, k) in KS.into_iter().enumerate() {
                // B = 4 holds one row of each kind; one case per V has B = 1.
                let b = if k == 5 { 1 } else { 4 };
                let temperature = TEMPERATURES[n % 3];
                let x = logits(&mut rng, b, v);
                let got = run(ctx, &x, b, v, k, temperature);
                let name = format!("sampling B={b} V={v} K={k} T={temperature}");
                check(&name, &got, &x, b, v, k, temperature);
            }
        }
    });
}

/// K = V (a full sort: every column after the first is picked "after" a tie or a
/// smaller value) and the largest K the launcher takes, at GPT-2's V.
#[test]
fn topk_full_sort_and_largest_k() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(8);
        for (b, v, k) in [(4, 101, 101), (1, 50257, TOPK_MAX_K)] {
            let x = logits(&mut rng, b, v);
            let got = run(ctx, &x, b, v, k, 1.0);
            check(&format!("topk B={b} V={v} K={k}"), &got, &x, b, v, k, 1.0);
        }
    });
}

/// Rows split into several bindings: contexts that plan for 64 rows per binding.
#[test]
fn sampling_chunked_rows_match_reference() {
    let mut rng = Rng::new(12);
    let (b, v, k) = (130, 101, 5);
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit((64 * v * 4) as u64);
        let chunks = ctx.row_chunks(b, v).len();
        assert!(chunks >= 3, "expected several chunks, got {chunks}");
        let x = logits(&mut rng, b, v);
        let got = run(&ctx, &x, b, v, k, 0.7);
        check(
            &format!("sampling chunked ({chunks} chunks) B={b} V={v}"),
            &got,
            &x,
            b,
            v,
            k,
            0.7,
        );
    }
}

#[test]
fn sampling_is_deterministic() {
    on_each_adapter(|ctx| {
        let (b, v, k) = (4, 509, 40);
        let x = logits(&mut Rng::new(4), b, v);
        let first = run(ctx, &x, b, v, k, 0.7);
        for _ in 0..2 {
            let again = run(ctx, &x, b, v, k, 0.7);
            assert!(same_bits(&first.probs, &again.probs), "probs differ");
            assert!(
                same_bits(&first.values, &again.values),
                "topk values differ"
            );
            assert_eq!(first.indices, again.indices);
            assert_eq!(first.argmax, again.argmax);
        }
    });
}

#[test]
fn sampling_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let (b, v) = (2, 2000);
        let logits = Tensor::zeros(ctx, "logits", &[b, v], DType::F32).unwrap();
        let probs = Tensor::zeros(ctx, "probs", &[b, v], DType::F32).unwrap();
        let f32_idx = Tensor::zeros(ctx, "f32 indices", &[b], DType::F32).unwrap();
        let values = Tensor::zeros(ctx, "values", &[b, 5], DType::F32).unwrap();
        let indices = Tensor::zeros(ctx, "indices", &[b, 5], DType::U32).unwrap();
        let mut s = Schedule::new("bad");
        for k in [0, TOPK_MAX_K + 1, v + 1] {
            let e = topk_forward(&mut s, ctx, &values, &indices, &logits, b, v, k);
            assert!(e.unwrap_err().to_string().contains("K = "), "K = {k}");
        }
        let e = topk_forward(&mut s, ctx, &values, &indices, &logits, b, v, 6);
        assert!(e.unwrap_err().to_string().contains("values"));
        for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(softmax_forward(&mut s, ctx, &probs, &logits, b, v, t).is_err());
        }
        let e = argmax_forward(&mut s, ctx, &f32_idx, &logits, b, v);
        assert!(e.unwrap_err().to_string().contains("f32 indices"));
        assert_eq!(s.launches(), 0);
    });
}

#[test]
fn sampling_references_on_a_known_row() {
    let x = [1.0, 3.0, f64::NEG_INFINITY, 3.0, 2.0, f64::NEG_INFINITY];
    let mut idx = [0u32; 1];
    cpu::argmax_forward(&mut idx, &x, 1, 6);
    assert_eq!(idx, [1]);
    let (mut values, mut indices) = ([0f64; 6], [0u32; 6]);
    cpu::topk_forward(&mut values, &mut indices, &x, 1, 6, 6);
    assert_eq!(indices, [1, 3, 4, 0, 2, 5]);
    assert_eq!(values[..4], [3.0, 3.0, 2.0, 1.0]);
    let mut p = [0f64; 6];
    cpu::softmax_forward(&mut p, &x, 1, 6, 0.5);
    let z = 2.0 * (6f64).exp() + (4f64).exp() + (2f64).exp();
    assert!((p[1] - (6f64).exp() / z).abs() < 1e-15 && p[2] == 0.0);
}
