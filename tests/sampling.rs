//! softmax_forward, argmax_forward and topk_forward against their CPU references at
//! V = 101, 509, 50257 and K = 1, 5, 40, 64, on rows with ties and -inf entries, rows
//! split into several binding chunks, the largest K, bad arguments and determinism;
//! sample_forward against its reference (the same draws, greedy, temperature, top-k,
//! top-p), against the distribution it claims over 20,000 draws, per seed determinism.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::sampling::{
    argmax_forward, sample_forward, softmax_forward, topk_forward, SampleSettings, TOPK_MAX_K,
};
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

/// sample_forward on `x` (B, V) with one row of settings per row: the ids.
fn sample_gpu(ctx: &GpuContext, x: &[f32], settings: &[SampleSettings], v: usize) -> Vec<u32> {
    let b = settings.len();
    let tl = Tensor::from_f32(ctx, "logits", &[b, v], x).unwrap();
    let ids = Tensor::zeros(ctx, "ids", &[b], DType::U32).unwrap();
    let st = SampleSettings::tensor(ctx, "settings", b).unwrap();
    SampleSettings::write(ctx, &st, settings).unwrap();
    let mut s = Schedule::new("sample");
    sample_forward(&mut s, ctx, &ids, &tl, &st, b, v).unwrap();
    s.run(ctx);
    ctx.block_on(ids.read::<u32>(ctx)).unwrap()
}

/// (temperature, top_k, top_p) cases: greedy, plain, each filter, both.
const SAMPLE_CASES: [(f32, u32, f32); 6] = [
    (0.0, 0, 1.0),
    (1.0, 0, 1.0),
    (0.7, 5, 1.0),
    (1.0, 0, 0.9),
    (1.6, 40, 0.8),
    (0.5, 0, 0.5),
];

/// Every GPU draw is the reference's, or (f32 sums against f64 ones) its neighbour across
/// a boundary of the cumulative distribution within 1e-5 of U.
fn check_draws(name: &str, got: &[u32], x: &[f32], settings: &[SampleSettings], v: usize) {
    let b = settings.len();
    let x = to_f64(x);
    let mut want = vec![0u32; b];
    cpu::sample_forward(&mut want, &x, settings, b, v);
    let mut probs = vec![0f64; b * v];
    cpu::sample_distribution(&mut probs, &x, settings, b, v);
    let mut exact = 0;
    for r in 0..b {
        if got[r] == want[r] {
            exact += 1;
            continue;
        }
        let p = &probs[r * v..(r + 1) * v];
        let g = got[r] as usize;
        let below: f64 = p[..g].iter().sum();
        let u = cpu::uniform_draw(settings[r].seed(), settings[r].counter);
        assert!(
            p[g] > 0.0 && below - 1e-5 <= u && u <= below + p[g] + 1e-5,
            "{name} row {r}: gpu drew {g} (p {}, cdf [{below}, {}]), reference {} at U = {u}",
            p[g],
            below + p[g],
            want[r]
        );
    }
    eprintln!("{name}: {exact} of {b} draws identical to the reference, the rest within 1e-5");
    // At V = 50257 a flat row puts a boundary every ~2e-5 of the mass: f32 sums may land
    // on a neighbour (checked above); smaller rows must agree almost always.
    if v <= 509 {
        assert!(exact * 10 >= b * 9, "{name}: only {exact} of {b} identical");
    }
}

#[test]
fn sample_forward_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(77);
        for v in VS {
            for (n, &(temperature, top_k, top_p)) in SAMPLE_CASES.iter().enumerate() {
                let b = 8;
                let x = logits(&mut rng, b, v);
                let settings: Vec<SampleSettings> = (0..b)
                    .map(|r| {
                        let seed = 1000 * n as u64 + r as u64 + (1u64 << 40);
                        SampleSettings::new(temperature, top_k, top_p, seed, r as u32).unwrap()
                    })
                    .collect();
                let got = sample_gpu(ctx, &x, &settings, v);
                let name = format!("sample V={v} T={temperature} k={top_k} p={top_p}");
                check_draws(&name, &got, &x, &settings, v);
            }
        }
    });
}

/// Rows split over several bindings, each row with its own settings.
#[test]
fn sample_forward_chunked_rows() {
    let (b, v) = (130, 101);
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit((64 * v * 4) as u64);
        let x = logits(&mut Rng::new(3), b, v);
        let settings: Vec<SampleSettings> = (0..b)
            .map(|r| {
                let (t, k, p) = SAMPLE_CASES[r % SAMPLE_CASES.len()];
                SampleSettings::new(t, k, p, r as u64, 7).unwrap()
            })
            .collect();
        let got = sample_gpu(&ctx, &x, &settings, v);
        check_draws("sample chunked", &got, &x, &settings, v);
    }
}

/// 1,500 draws of one row (counter = draw index) follow the distribution the reference
/// gives, filters included: each frequency within 5 standard errors of its probability.
#[test]
fn sample_forward_draws_follow_the_distribution() {
    on_each_adapter(|ctx| {
        let v = 10;
        let row: Vec<f32> = vec![
            2.0,
            1.0,
            0.5,
            0.0,
            -1.0,
            1.5,
            f32::NEG_INFINITY,
            0.2,
            1.0,
            -3.0,
        ];
        let n = 1_500;
        for (t, k, p) in [(1.3, 0, 1.0), (0.8, 4, 1.0), (1.0, 6, 0.7)] {
            let x: Vec<f32> = row.iter().cycle().take(n * v).cloned().collect();
            let settings: Vec<SampleSettings> = (0..n)
                .map(|i| SampleSettings::new(t, k, p, 42, i as u32).unwrap())
                .collect();
            let got = sample_gpu(ctx, &x, &settings, v);
            let mut probs = vec![0f64; v];
            cpu::sample_distribution(&mut probs, &to_f64(&row), &settings[..1], 1, v);
            let mut counts = vec![0usize; v];
            got.iter().for_each(|&i| counts[i as usize] += 1);
            for i in 0..v {
                let f = counts[i] as f64 / n as f64;
                let se = (probs[i] * (1.0 - probs[i]) / n as f64).sqrt();
                assert!(
                    (f - probs[i]).abs() <= 5.0 * se + 1e-9,
                    "T={t} k={k} p={p}: token {i} drawn {f}, probability {}",
                    probs[i]
                );
            }
            eprintln!("T={t} k={k} p={p}: counts {counts:?}, probabilities {probs:.3?}");
        }
    });
}

#[test]
fn sample_forward_is_deterministic_per_seed() {
    on_each_adapter(|ctx| {
        let (b, v) = (16, 509);
        let x: Vec<f32> = {
            let row = logits(&mut Rng::new(5), 1, v);
            row.iter().cycle().take(b * v).cloned().collect()
        };
        let with_seed = |seed: u64| -> Vec<SampleSettings> {
            (0..b)
                .map(|i| SampleSettings::new(1.0, 0, 1.0, seed, i as u32).unwrap())
                .collect()
        };
        let a = sample_gpu(ctx, &x, &with_seed(1), v);
        assert_eq!(a, sample_gpu(ctx, &x, &with_seed(1), v));
        let other = sample_gpu(ctx, &x, &with_seed(2), v);
        assert_ne!(a, other, "seeds 1 and 2 drew the same 16 tokens");
    });
}

#[test]
fn sample_settings_and_launcher_reject_bad_arguments() {
    for t in [-1.0, f32::NAN, f32::INFINITY] {
        let e = SampleSettings::new(t, 0, 1.0, 0, 0).unwrap_err();
        assert!(e.to_string().contains("temperature"), "{e}");
    }
    for p in [0.0, -0.5, 1.5, f32::NAN] {
        let e = SampleSettings::new(1.0, 0, p, 0, 0).unwrap_err();
        assert!(e.to_string().contains("top_p"), "{e}");
    }
    let s = SampleSettings::new(1.0, 3, 0.5, u64::MAX - 5, 9).unwrap();
    assert_eq!(s.seed(), u64::MAX - 5);
    on_each_adapter(|ctx| {
        let (b, v) = (2, 50);
        let logits = Tensor::zeros(ctx, "logits", &[b, v], DType::F32).unwrap();
        let ids = Tensor::zeros(ctx, "ids", &[b], DType::U32).unwrap();
        let short = SampleSettings::tensor(ctx, "one settings row", 1).unwrap();
        let f32_settings = Tensor::zeros(ctx, "f32 settings", &[b, 8], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        let e = sample_forward(&mut s, ctx, &ids, &logits, &short, b, v).unwrap_err();
        assert!(e.to_string().contains("one settings row"), "{e}");
        let e = sample_forward(&mut s, ctx, &ids, &logits, &f32_settings, b, v).unwrap_err();
        assert!(e.to_string().contains("f32 settings"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}

#[test]
fn uniform_draws_are_uniform() {
    let n = 100_000;
    let mut buckets = [0usize; 10];
    for i in 0..n {
        let u = cpu::uniform_draw(12345, i);
        assert!((0.0..1.0).contains(&u));
        buckets[(u * 10.0) as usize] += 1;
    }
    for c in buckets {
        assert!((c as f64 - 10_000.0).abs() < 500.0, "{buckets:?}");
    }
}
