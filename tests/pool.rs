//! mean_pool_forward and l2norm_forward (sentence embeddings) against their CPU
//! references: right-padded and scattered masks, a row whose mask is all 0 (0s, not
//! NaN), padding that holds NaN and inf (never read into the mean), T = 1 and T = 0;
//! l2norm at C = 1, 33, 384, 768 with a zero row and rows of tiny and large values; the
//! two chained as sentence-transformers does; batch chunks under a small binding limit
//! (bit-identical to one launch) and the error when one batch row cannot be bound;
//! determinism; wrong sizes and a mask of the wrong dtype.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::pool::{l2norm_forward, mean_pool_forward};
use wgformer::reference::pool as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, test_contexts, to_f64};

/// (B, T, C) for mean pooling; BERT's sentence models have C = 384 or 768.
const SIZES: [(usize, usize, usize); 5] = [
    (1, 1, 48),
    (2, 7, 80),
    (3, 1, 768),
    (3, 7, 384),
    (3, 64, 768),
];

/// Tolerances for both kernels: tighter than the usual 1e-4 / 1e-3 of reductions, since
/// sums of at most 64 positions or 768 squares stay within a few f32 ulps (the observed
/// errors are printed).
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// Right padding, as a tokenizer pads a batch: row b has `lens[b]` real tokens.
fn right_padded(lens: &[usize], t: usize) -> Vec<i32> {
    lens.iter()
        .flat_map(|&l| (0..t).map(move |i| (i < l) as i32))
        .collect()
}

/// (pooled (B, C), embedding (B, C) = l2norm(pooled)) on the GPU, in one schedule; both
/// start as NaN so an element no invocation writes shows up.
fn run(
    ctx: &GpuContext,
    x: &[f32],
    mask: &[i32],
    b: usize,
    t: usize,
    c: usize,
) -> (Vec<f32>, Vec<f32>) {
    let tx = Tensor::from_f32(ctx, "x", &[b, t, c], x).unwrap();
    let tm = Tensor::from_i32(ctx, "mask", &[b, t], mask).unwrap();
    let pooled = Tensor::from_f32(ctx, "pooled", &[b, c], &vec![f32::NAN; b * c]).unwrap();
    let emb = Tensor::from_f32(ctx, "emb", &[b, c], &vec![f32::NAN; b * c]).unwrap();
    let mut s = Schedule::new("pool");
    mean_pool_forward(&mut s, ctx, &pooled, &tx, &tm, b, t, c).unwrap();
    l2norm_forward(&mut s, ctx, &emb, &pooled, b, c).unwrap();
    s.run(ctx);
    (read(ctx, &pooled), read(ctx, &emb))
}

/// l2norm_forward alone on x (B, C).
fn run_l2norm(ctx: &GpuContext, x: &[f32], b: usize, c: usize) -> Vec<f32> {
    let tx = Tensor::from_f32(ctx, "x", &[b, c], x).unwrap();
    let out = Tensor::from_f32(ctx, "out", &[b, c], &vec![f32::NAN; b * c]).unwrap();
    let mut s = Schedule::new("l2norm");
    l2norm_forward(&mut s, ctx, &out, &tx, b, c).unwrap();
    s.run(ctx);
    read(ctx, &out)
}

/// Both kernels against the references (the l2norm reference applied to the f64 pooled
/// mean); returns the max |Δ| of (pooled, embedding).
fn check(
    ctx: &GpuContext,
    name: &str,
    x: &[f32],
    mask: &[i32],
    b: usize,
    t: usize,
    c: usize,
) -> (f32, f32) {
    let (pooled, emb) = run(ctx, x, mask, b, t, c);
    let mut want = vec![0f64; b * c];
    cpu::mean_pool_forward(&mut want, &to_f64(x), mask, b, t, c);
    let mut want_emb = vec![0f64; b * c];
    cpu::l2norm_forward(&mut want_emb, &want, b, c);
    let p = assert_close64(
        &format!("mean_pool_forward {name}"),
        &pooled,
        &want,
        ATOL,
        RTOL,
    );
    let e = assert_close64(
        &format!("l2norm_forward {name}"),
        &emb,
        &want_emb,
        ATOL,
        RTOL,
    );
    eprintln!(
        "pool {name}: max |Δ| mean_pool {:e}, l2norm {:e}",
        p.max_abs, e.max_abs
    );
    (p.max_abs, e.max_abs)
}

#[test]
fn mean_pool_and_l2norm_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(111);
        for (b, t, c) in SIZES {
            let x = rng.vec_normal(b * t * c, 1.0);
            // Lengths 1..=T, the first row full.
            let lens: Vec<usize> = (0..b)
                .map(|i| {
                    if i == 0 {
                        t
                    } else {
                        1 + rng.below(t as u64) as usize
                    }
                })
                .collect();
            let mask = right_padded(&lens, t);
            check(
                ctx,
                &format!("B={b} T={t} C={c} right-padded"),
                &x,
                &mask,
                b,
                t,
                c,
            );
            // Scattered 0s and 1s, as no tokenizer makes but the formula allows.
            let mask: Vec<i32> = (0..b * t).map(|_| rng.below(2) as i32).collect();
            check(
                ctx,
                &format!("B={b} T={t} C={c} scattered"),
                &x,
                &mask,
                b,
                t,
                c,
            );
        }
    });
}

#[test]
fn mean_pool_skips_padding_and_empty_rows() {
    on_each_adapter(|ctx| {
        let (b, t, c) = (3, 7, 80);
        let mut rng = Rng::new(112);
        let mut x = rng.vec_normal(b * t * c, 1.0);
        // Row 0: 4 real tokens; row 1: none; row 2: all 7.
        let mask = right_padded(&[4, 0, 7], t);
        // Padding holds NaN and inf: skipped, never multiplied by 0.
        for (i, v) in x.iter_mut().enumerate() {
            if mask[i / c] == 0 {
                *v = if i % 2 == 0 { f32::NAN } else { f32::INFINITY };
            }
        }
        let (pooled, emb) = run(ctx, &x, &mask, b, t, c);
        assert!(
            pooled.iter().chain(&emb).all(|v| v.is_finite()),
            "padding reached the mean"
        );
        let row1 = c..2 * c;
        assert!(
            pooled[row1.clone()].iter().all(|&v| v == 0.0),
            "empty row: {:?}",
            &pooled[row1.clone()]
        );
        assert!(emb[row1].iter().all(|&v| v == 0.0), "empty row's embedding");
        check(ctx, "padding NaN/inf, an empty row", &x, &mask, b, t, c);
        // T = 1 with B = 2: one real token (the mean is that token) and none.
        let x = rng.vec_normal(2 * c, 1.0);
        let (pooled, _) = run(ctx, &x, &[1, 0], 2, 1, c);
        assert_eq!(&pooled[..c], &x[..c], "T = 1: the token itself");
        assert!(pooled[c..].iter().all(|&v| v == 0.0), "T = 1, no token");
        // T = 0: no tokens at all, every row 0.
        let (pooled, emb) = run(ctx, &[], &[], 2, 0, c);
        assert!(pooled.iter().chain(&emb).all(|&v| v == 0.0), "T = 0");
    });
}

#[test]
fn l2norm_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(113);
        for c in [1, 33, 384, 768] {
            for b in [1, 3] {
                let x = rng.vec_normal(b * c, 3.0);
                let out = run_l2norm(ctx, &x, b, c);
                let mut want = vec![0f64; b * c];
                cpu::l2norm_forward(&mut want, &to_f64(&x), b, c);
                let name = format!("l2norm_forward B={b} C={c}");
                let r = assert_close64(&name, &out, &want, ATOL, RTOL);
                eprintln!("{name}: max |Δ| {:e}", r.max_abs);
            }
        }
        // A zero row (0s, not NaN), rows of tiny and of large values (unit norm after all:
        // their Σ x² stays within f32), and C = 1 (±1, or 0).
        let c = 33;
        let mut x = vec![0f32; 4 * c];
        for i in 0..c {
            x[c + i] = 1e-15 * (i as f32 - 16.0);
            x[2 * c + i] = 1e15 * (i as f32 - 16.0);
            x[3 * c + i] = if i == 5 { -2.5 } else { 0.0 };
        }
        let out = run_l2norm(ctx, &x, 4, c);
        let mut want = vec![0f64; 4 * c];
        cpu::l2norm_forward(&mut want, &to_f64(&x), 4, c);
        assert_close64("l2norm_forward special rows", &out, &want, ATOL, RTOL);
        assert!(out[..c].iter().all(|&v| v == 0.0), "zero row");
        assert_eq!(out[3 * c + 5], -1.0, "one-hot row");
        let out = run_l2norm(ctx, &[3.0, -0.5, 0.0], 3, 1);
        assert_eq!(out, [1.0, -1.0, 0.0], "C = 1");
    });
}

#[test]
fn pool_chunks_batches_that_exceed_one_binding() {
    let (b, t, c) = (19, 64, 48);
    let mut rng = Rng::new(114);
    let x = rng.vec_normal(b * t * c, 1.0);
    let lens: Vec<usize> = (0..b).map(|i| [64, 1, 0, 33][i % 4]).collect();
    let mask = right_padded(&lens, t);
    for ctx in test_contexts(&Needs::default()) {
        let whole = run(&ctx, &x, &mask, b, t, c);
        let c2 = 384;
        let x2 = rng.vec_normal(b * c2, 1.0);
        let whole2 = run_l2norm(&ctx, &x2, b, c2);
        // 8 rows of x (12 KiB each) per binding: chunks of 8, 8 and 3 batch rows.
        let small = ctx.with_binding_limit(8 * (t * c * 4) as u64);
        let mut s = Schedule::new("count");
        let tx = Tensor::from_f32(&small, "x", &[b, t, c], &x).unwrap();
        let tm = Tensor::from_i32(&small, "mask", &[b, t], &mask).unwrap();
        let out = Tensor::zeros(&small, "out", &[b, c], DType::F32).unwrap();
        mean_pool_forward(&mut s, &small, &out, &tx, &tm, b, t, c).unwrap();
        assert!(s.launches() > 1, "no chunks at the small limit");
        eprintln!("mean_pool_forward: {} chunks", s.launches());
        let chunked = run(&small, &x, &mask, b, t, c);
        assert!(same_bits(&whole.0, &chunked.0), "mean_pool chunks differ");
        assert!(same_bits(&whole.1, &chunked.1), "l2norm chunks differ");
        check(&small, "chunked", &x, &mask, b, t, c);
        // l2norm alone on rows of 384 (1.5 KiB): 5 per binding, 4 chunks.
        let small = small.with_binding_limit(5 * c2 as u64 * 4);
        let chunked2 = run_l2norm(&small, &x2, b, c2);
        assert!(same_bits(&whole2, &chunked2), "l2norm chunks differ");
        // One batch row of x larger than a binding: an error naming x, not a launch.
        let tiny = small.with_binding_limit((t * c * 4 / 2) as u64);
        let tx = Tensor::from_f32(&tiny, "x", &[b, t, c], &x).unwrap();
        let tm = Tensor::from_i32(&tiny, "mask", &[b, t], &mask).unwrap();
        let out = Tensor::zeros(&tiny, "out", &[b, c], DType::F32).unwrap();
        let mut s = Schedule::new("too large");
        let e = mean_pool_forward(&mut s, &tiny, &out, &tx, &tm, b, t, c).unwrap_err();
        assert!(e.to_string().contains("x (one batch row"), "{e}");
        assert_eq!(s.launches(), 0);
    }
}

#[test]
fn pool_is_deterministic() {
    on_each_adapter(|ctx| {
        let (b, t, c) = (3, 64, 384);
        let mut rng = Rng::new(115);
        let x = rng.vec_normal(b * t * c, 2.0);
        let mask = right_padded(&[64, 17, 40], t);
        let first = run(ctx, &x, &mask, b, t, c);
        let again = run(ctx, &x, &mask, b, t, c);
        assert!(
            same_bits(&first.0, &again.0),
            "mean_pool_forward bits differ"
        );
        assert!(same_bits(&first.1, &again.1), "l2norm_forward bits differ");
    });
}

#[test]
fn pool_rejects_wrong_sizes_and_dtypes() {
    on_each_adapter(|ctx| {
        let (b, t, c) = (2, 3, 4);
        let x = Tensor::zeros(ctx, "x", &[b, t, c], DType::F32).unwrap();
        let mask = Tensor::zeros(ctx, "mask", &[b, t], DType::I32).unwrap();
        let out = Tensor::zeros(ctx, "out", &[b, c], DType::F32).unwrap();
        let short = Tensor::zeros(ctx, "short", &[5], DType::F32).unwrap();
        let short_mask = Tensor::zeros(ctx, "short_mask", &[5], DType::I32).unwrap();
        let float_mask = Tensor::zeros(ctx, "float_mask", &[b, t], DType::F32).unwrap();
        let mut s = Schedule::new("pool");
        for (o, xx, m, what) in [
            (&short, &x, &mask, "short"),
            (&out, &short, &mask, "short"),
            (&out, &x, &short_mask, "short_mask"),
            (&out, &x, &float_mask, "float_mask"),
        ] {
            let e = mean_pool_forward(&mut s, ctx, o, xx, m, b, t, c).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = l2norm_forward(&mut s, ctx, &short, &out, b, c).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = l2norm_forward(&mut s, ctx, &out, &short, b, c).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}
