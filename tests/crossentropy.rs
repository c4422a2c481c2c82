//! crossentropy_forward, crossentropy_mean, crossentropy_backward and its in-place form
//! against their CPU references: V = 101, 509, 50257, B·T = 1, 7, 192, mixes of ignored
//! targets, logits split into several binding chunks, all targets ignored, determinism,
//! the backward's grad_scale (gradient accumulation), and the reference gradient against
//! finite differences. The chunked forms (crossentropy_chunk_forward, _finish,
//! _backward_inplace) against their references and the whole-logits ones: ragged last
//! chunks, targets on chunk boundaries, one column per chunk, V = 50257 in chunks of 4096,
//! chunks bound in row pieces, ignored and invalid targets, and finite differences.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::crossentropy::{
    crossentropy_backward, crossentropy_backward_inplace, crossentropy_chunk_backward_inplace,
    crossentropy_chunk_finish, crossentropy_chunk_forward, crossentropy_forward, crossentropy_mean,
    IGNORE_INDEX, ROW_STATS, STATS_LEN,
};
use wgformer::reference::crossentropy as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_gradient, on_each_adapter, same_bits, test_contexts, to_f64,
};

/// (B·T, V). V = 50257 (GPT-2) only at small B·T: the CPU reference is the slow part.
const SIZES: [(usize, usize); 8] = [
    (1, 101),
    (7, 101),
    (192, 101),
    (1, 509),
    (7, 509),
    (192, 509),
    (1, 50257),
    (7, 50257),
];

/// Logits with rows shifted by up to ±40 (stability: exp of raw logits would overflow
/// or vanish) and a few spikes, so some rows are nearly one-hot.
fn logits(rng: &mut Rng, bt: usize, v: usize) -> Vec<f32> {
    let mut x = rng.vec_normal(bt * v, 2.0);
    for row in x.chunks_mut(v) {
        let shift = rng.uniform() * 80.0 - 40.0;
        row.iter_mut().for_each(|e| *e += shift);
        let spike = rng.below(v as u64) as usize;
        row[spike] += rng.uniform() * 20.0;
    }
    x
}

/// Targets in [0, V), about a quarter of them ignored.
fn targets(rng: &mut Rng, bt: usize, v: usize) -> Vec<i32> {
    (0..bt)
        .map(|_| {
            if rng.uniform() < 0.25 {
                IGNORE_INDEX
            } else {
                rng.below(v as u64) as i32
            }
        })
        .collect()
}

/// Everything one training step's loss computes, read back.
struct Outputs {
    losses: Vec<f32>,
    stats: Vec<f32>,
    dlogits: Vec<f32>,
    /// dlogits from crossentropy_backward_inplace, over a copy of the logits.
    inplace: Vec<f32>,
}

fn run(ctx: &GpuContext, logits: &[f32], targets: &[i32], bt: usize, v: usize) -> Outputs {
    run_scaled(ctx, logits, targets, bt, v, 1.0)
}

/// [`run`] with the backward launches' `grad_scale`.
fn run_scaled(
    ctx: &GpuContext,
    logits: &[f32],
    targets: &[i32],
    bt: usize,
    v: usize,
    grad_scale: f32,
) -> Outputs {
    let tl = Tensor::from_f32(ctx, "logits", &[bt, v], logits).unwrap();
    let tl2 = Tensor::from_f32(ctx, "logits (in place)", &[bt, v], logits).unwrap();
    let tt = Tensor::from_i32(ctx, "targets", &[bt], targets).unwrap();
    let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32).unwrap();
    let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
    // Garbage in dlogits: the backward pass writes, it does not add.
    let junk = vec![7.0f32; bt * v];
    let dlogits = Tensor::from_f32(ctx, "dlogits", &[bt, v], &junk).unwrap();
    let mut s = Schedule::new("crossentropy");
    crossentropy_forward(&mut s, ctx, &losses, &tl, &tt, bt, v).unwrap();
    crossentropy_mean(&mut s, ctx, &stats, &losses, &tt, bt).unwrap();
    crossentropy_backward(&mut s, ctx, &dlogits, &tl, &tt, &stats, bt, v, grad_scale).unwrap();
    crossentropy_forward(&mut s, ctx, &losses, &tl2, &tt, bt, v).unwrap();
    crossentropy_backward_inplace(&mut s, ctx, &tl2, &tt, &stats, bt, v, grad_scale).unwrap();
    s.run(ctx);
    let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
    Outputs {
        losses: read(&losses),
        stats: read(&stats),
        dlogits: read(&dlogits),
        inplace: read(&tl2),
    }
}

/// Compare every output with the f64 reference.
fn check(name: &str, got: &Outputs, logits: &[f32], targets: &[i32], bt: usize, v: usize) {
    check_scaled(name, got, logits, targets, bt, v, 1.0)
}

/// [`check`] for outputs of [`run_scaled`] with `grad_scale`.
fn check_scaled(
    name: &str,
    got: &Outputs,
    logits: &[f32],
    targets: &[i32],
    bt: usize,
    v: usize,
    grad_scale: f64,
) {
    let x = to_f64(logits);
    let mut losses = vec![0f64; bt];
    cpu::crossentropy_forward(&mut losses, &x, targets, bt, v);
    let mut stats = vec![0f64; STATS_LEN];
    cpu::crossentropy_mean(&mut stats, &losses, targets, bt);
    let mut dlogits = vec![0f64; bt * v];
    cpu::crossentropy_backward(&mut dlogits, &x, targets, &stats, bt, v, grad_scale);
    let c = assert_close64(&format!("{name} losses"), &got.losses, &losses, 1e-4, 1e-3);
    eprintln!("{name}: losses max |Δ| {:e}", c.max_abs);
    assert_close64(&format!("{name} stats"), &got.stats, &stats, 1e-4, 1e-3);
    // Gradients are (softmax - onehot) · 1/count, so |dlogits| <= 1/count: the absolute
    // tolerance is the reductions' 1e-4 on that unscaled gradient.
    let atol = 1e-4 * (stats[2] * grad_scale).max(f64::MIN_POSITIVE) as f32;
    let c = assert_close64(
        &format!("{name} dlogits"),
        &got.dlogits,
        &dlogits,
        atol,
        1e-3,
    );
    eprintln!(
        "{name}: dlogits max |Δ| {:e} (x count = {:e})",
        c.max_abs,
        c.max_abs as f64 * stats[1]
    );
    assert_close64(
        &format!("{name} dlogits in place"),
        &got.inplace,
        &dlogits,
        atol,
        1e-3,
    );
}

#[test]
fn crossentropy_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(2024);
        for (bt, v) in SIZES {
            let x = logits(&mut rng, bt, v);
            let mut t = targets(&mut rng, bt, v);
            if bt > 1 {
                t[0] = IGNORE_INDEX;
                t[bt - 1] = (v - 1) as i32; // last column
            }
            let got = run(ctx, &x, &t, bt, v);
            check(&format!("crossentropy BT={bt} V={v}"), &got, &x, &t, bt, v);
        }
    });
}

/// Logits split into several bindings: contexts that plan for a small binding limit.
#[test]
fn crossentropy_chunked_rows_match_reference() {
    let mut rng = Rng::new(77);
    for (bt, v) in [(192, 509), (130, 101)] {
        // 64 rows per binding: a multiple of every offset quantum (alignment <= 256 bytes).
        let limit = (64 * v * 4) as u64;
        for ctx in test_contexts(&Needs::default()) {
            let ctx = ctx.with_binding_limit(limit);
            let chunks = ctx.row_chunks(bt, v).len();
            assert!(chunks >= 3, "expected several chunks, got {chunks}");
            let x = logits(&mut rng, bt, v);
            let t = targets(&mut rng, bt, v);
            let got = run(&ctx, &x, &t, bt, v);
            let name = format!("crossentropy chunked ({chunks} chunks) BT={bt} V={v}");
            check(&name, &got, &x, &t, bt, v);
        }
    }
}

#[test]
fn crossentropy_all_ignored_gives_zeros_not_nan() {
    on_each_adapter(|ctx| {
        let (bt, v) = (7, 101);
        let mut rng = Rng::new(5);
        let x = logits(&mut rng, bt, v);
        let t = vec![IGNORE_INDEX; bt];
        let got = run(ctx, &x, &t, bt, v);
        assert!(got.losses.iter().all(|&l| l == 0.0), "{:?}", got.losses);
        assert_eq!(got.stats, vec![0.0; 4]);
        assert!(got.dlogits.iter().all(|&d| d == 0.0));
        assert!(got.inplace.iter().all(|&d| d == 0.0));
    });
}

#[test]
fn crossentropy_invalid_target_gives_nan() {
    on_each_adapter(|ctx| {
        let (bt, v) = (3, 101);
        let mut rng = Rng::new(6);
        let x = logits(&mut rng, bt, v);
        let t = vec![5, v as i32, -1];
        let got = run(ctx, &x, &t, bt, v);
        assert!(got.losses[0].is_finite());
        assert!(got.losses[1].is_nan() && got.losses[2].is_nan());
        assert!(got.stats[0].is_nan());
        for out in [&got.dlogits, &got.inplace] {
            assert!(out[v..].iter().all(|d| d.is_nan()), "invalid rows not NaN");
        }
    });
}

/// The mean over many positions per invocation (B·T > 256).
#[test]
fn crossentropy_mean_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(9);
        for bt in [1, 255, 3000] {
            let losses = rng.vec_uniform(bt, 0.0, 12.0);
            let t = targets(&mut rng, bt, 50257);
            let tl = Tensor::from_f32(ctx, "losses", &[bt], &losses).unwrap();
            let tt = Tensor::from_i32(ctx, "targets", &[bt], &t).unwrap();
            let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
            let mut s = Schedule::new("crossentropy_mean");
            crossentropy_mean(&mut s, ctx, &stats, &tl, &tt, bt).unwrap();
            s.run(ctx);
            let got = ctx.block_on(stats.read_f32(ctx)).unwrap();
            let mut want = vec![0f64; STATS_LEN];
            cpu::crossentropy_mean(&mut want, &to_f64(&losses), &t, bt);
            assert_close64(
                &format!("crossentropy_mean BT={bt}"),
                &got,
                &want,
                1e-4,
                1e-3,
            );
        }
    });
}

#[test]
fn crossentropy_is_deterministic() {
    on_each_adapter(|ctx| {
        let (bt, v) = (192, 509);
        let mut rng = Rng::new(13);
        let x = logits(&mut rng, bt, v);
        let t = targets(&mut rng, bt, v);
        let first = run(ctx, &x, &t, bt, v);
        for _ in 0..2 {
            let again = run(ctx, &x, &t, bt, v);
            assert!(same_bits(&first.losses, &again.losses), "losses differ");
            assert!(same_bits(&first.stats, &again.stats), "stats differ");
            assert!(same_bits(&first.dlogits, &again.dlogits), "dlogits differ");
            assert!(
                same_bits(&first.inplace, &again.inplace),
                "in place differs"
            );
        }
    });
}

#[test]
fn crossentropy_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let (bt, v) = (4, 11);
        let logits = Tensor::zeros(ctx, "logits", &[bt, v], DType::F32).unwrap();
        let bad_logits = Tensor::zeros(ctx, "short logits", &[bt, v - 1], DType::F32).unwrap();
        let targets = Tensor::zeros(ctx, "targets", &[bt], DType::I32).unwrap();
        let f32_targets = Tensor::zeros(ctx, "f32 targets", &[bt], DType::F32).unwrap();
        let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32).unwrap();
        let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        let e = crossentropy_forward(&mut s, ctx, &losses, &bad_logits, &targets, bt, v);
        assert!(e.unwrap_err().to_string().contains("short logits"));
        let e = crossentropy_forward(&mut s, ctx, &losses, &logits, &f32_targets, bt, v);
        assert!(e.unwrap_err().to_string().contains("f32 targets"));
        let e = crossentropy_backward(&mut s, ctx, &logits, &logits, &targets, &stats, bt, v, 1.0);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("crossentropy_backward_inplace"));
        let e =
            crossentropy_backward_inplace(&mut s, ctx, &logits, &targets, &stats, bt, v, f32::NAN);
        assert!(e.unwrap_err().to_string().contains("grad_scale"));
        assert_eq!(s.launches(), 0);
    });
}

/// A `grad_scale` of 1/K (K accumulated micro-batches) scales the gradient and nothing
/// else; a scale of 1 gives exactly the unscaled bits.
#[test]
fn crossentropy_backward_grad_scale_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(31);
        for (bt, v) in [(7, 101), (192, 509)] {
            let x = logits(&mut rng, bt, v);
            let t = targets(&mut rng, bt, v);
            let got = run_scaled(ctx, &x, &t, bt, v, 0.25);
            check_scaled(&format!("scaled {bt}x{v}"), &got, &x, &t, bt, v, 0.25);
            let unscaled = run(ctx, &x, &t, bt, v);
            let again = run_scaled(ctx, &x, &t, bt, v, 1.0);
            assert!(same_bits(&unscaled.dlogits, &again.dlogits));
        }
    });
}

/// The reference gradient is the derivative of the reference mean loss.
#[test]
fn crossentropy_backward_reference_matches_finite_differences() {
    let (bt, v) = (6, 7);
    let mut rng = Rng::new(21);
    let x = to_f64(&rng.vec_normal(bt * v, 1.5));
    let t = [3, IGNORE_INDEX, 0, 6, IGNORE_INDEX, 2];
    let mean_loss = |x: &[f64]| {
        let mut losses = vec![0f64; bt];
        cpu::crossentropy_forward(&mut losses, x, &t, bt, v);
        let mut stats = [0f64; STATS_LEN];
        cpu::crossentropy_mean(&mut stats, &losses, &t, bt);
        stats
    };
    let stats = mean_loss(&x);
    assert_eq!(stats[1], 4.0);
    let mut dx = vec![0f64; bt * v];
    cpu::crossentropy_backward(&mut dx, &x, &t, &stats, bt, v, 1.0);
    assert_gradient("crossentropy_backward", &x, &dx, |x| mean_loss(x)[0], 1000);
    let mut inplace = x.clone();
    cpu::crossentropy_backward_inplace(&mut inplace, &t, &stats, bt, v, 1.0);
    assert_eq!(inplace, dx);
    // With grad_scale, the gradient of grad_scale · mean loss (one of K micro-batches).
    let mut scaled = vec![0f64; bt * v];
    cpu::crossentropy_backward(&mut scaled, &x, &t, &stats, bt, v, 0.25);
    assert_gradient(
        "crossentropy_backward scaled",
        &x,
        &scaled,
        |x| 0.25 * mean_loss(x)[0],
        1000,
    );
}

// ---- chunked over the vocabulary ----

/// What the chunked kernels give for logits split into chunks of `vc` columns, each
/// chunk its own (B·T, Vc) tensor, as the classifier writes them.
struct ChunkOutputs {
    row_stats: Vec<f32>,
    losses: Vec<f32>,
    stats: Vec<f32>,
    /// The chunks' dlogits reassembled into (B·T, V).
    dlogits: Vec<f32>,
}

/// Columns [v0, v0 + n) of each row of logits (B·T, V).
fn columns(x: &[f32], bt: usize, v: usize, v0: usize, n: usize) -> Vec<f32> {
    (0..bt)
        .flat_map(|r| x[r * v + v0..r * v + v0 + n].iter().copied())
        .collect()
}

/// Garbage in row stats before the first chunk: the chunk at v0 = 0 must overwrite it,
/// and rows with ignored targets keep it.
const JUNK_ROW_STATS: f32 = 7.0;

fn run_chunked(
    ctx: &GpuContext,
    logits: &[f32],
    targets: &[i32],
    bt: usize,
    v: usize,
    vc: usize,
    grad_scale: f32,
) -> ChunkOutputs {
    let tt = Tensor::from_i32(ctx, "targets", &[bt], targets).unwrap();
    let junk = vec![JUNK_ROW_STATS; bt * ROW_STATS];
    let row_stats = Tensor::from_f32(ctx, "row stats", &[bt, ROW_STATS], &junk).unwrap();
    let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32).unwrap();
    let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
    let chunks: Vec<(usize, usize, Tensor)> = (0..v)
        .step_by(vc)
        .map(|v0| {
            let n = vc.min(v - v0);
            let label = format!("logits cols {v0}..{}", v0 + n);
            let t = Tensor::from_f32(ctx, &label, &[bt, n], &columns(logits, bt, v, v0, n));
            (v0, n, t.unwrap())
        })
        .collect();
    let mut s = Schedule::new("crossentropy chunks");
    for (v0, n, t) in &chunks {
        crossentropy_chunk_forward(&mut s, ctx, &row_stats, t, &tt, bt, v, *v0, *n).unwrap();
    }
    crossentropy_chunk_finish(&mut s, ctx, &losses, &row_stats, &tt, bt, v).unwrap();
    crossentropy_mean(&mut s, ctx, &stats, &losses, &tt, bt).unwrap();
    for (v0, n, t) in &chunks {
        crossentropy_chunk_backward_inplace(
            &mut s, ctx, t, &tt, &row_stats, &stats, bt, v, *v0, *n, grad_scale,
        )
        .unwrap();
    }
    s.run(ctx);
    let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
    let mut dlogits = vec![0f32; bt * v];
    for (v0, n, t) in &chunks {
        let d = read(t);
        for r in 0..bt {
            dlogits[r * v + v0..r * v + v0 + n].copy_from_slice(&d[r * n..(r + 1) * n]);
        }
    }
    ChunkOutputs {
        row_stats: read(&row_stats),
        losses: read(&losses),
        stats: read(&stats),
        dlogits,
    }
}

/// Compare the chunked outputs with the chunk references and with the whole-logits
/// references (the answer they must reproduce).
#[allow(clippy::too_many_arguments)]
fn check_chunked(
    name: &str,
    got: &ChunkOutputs,
    logits: &[f32],
    targets: &[i32],
    bt: usize,
    v: usize,
    vc: usize,
    grad_scale: f64,
) {
    let x = to_f64(logits);
    // The chunk references, chunk by chunk.
    let mut row_stats = vec![JUNK_ROW_STATS as f64; bt * ROW_STATS];
    for v0 in (0..v).step_by(vc) {
        let n = vc.min(v - v0);
        let chunk = to_f64(&columns(logits, bt, v, v0, n));
        cpu::crossentropy_chunk_forward(&mut row_stats, &chunk, targets, bt, v, v0, n);
    }
    let mut losses = vec![0f64; bt];
    cpu::crossentropy_chunk_finish(&mut losses, &row_stats, targets, bt, v);
    let mut stats = vec![0f64; STATS_LEN];
    cpu::crossentropy_mean(&mut stats, &losses, targets, bt);
    let mut dlogits = vec![0f64; bt * v];
    for v0 in (0..v).step_by(vc) {
        let n = vc.min(v - v0);
        let mut chunk = to_f64(&columns(logits, bt, v, v0, n));
        cpu::crossentropy_chunk_backward_inplace(
            &mut chunk, targets, &row_stats, &stats, bt, v, v0, n, grad_scale,
        );
        for r in 0..bt {
            dlogits[r * v + v0..r * v + v0 + n].copy_from_slice(&chunk[r * n..(r + 1) * n]);
        }
    }
    // The whole-logits references.
    let mut whole_losses = vec![0f64; bt];
    cpu::crossentropy_forward(&mut whole_losses, &x, targets, bt, v);
    let mut whole_stats = vec![0f64; STATS_LEN];
    cpu::crossentropy_mean(&mut whole_stats, &whole_losses, targets, bt);
    let mut whole_dlogits = vec![0f64; bt * v];
    cpu::crossentropy_backward(
        &mut whole_dlogits,
        &x,
        targets,
        &whole_stats,
        bt,
        v,
        grad_scale,
    );
    // The references agree with each other to rounding (f64).
    for (what, a, b) in [
        ("losses", &losses, &whole_losses),
        ("stats", &stats, &whole_stats),
        ("dlogits", &dlogits, &whole_dlogits),
    ] {
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(p, q)| (p - q).abs() / (1.0 + q.abs()))
            .fold(0f64, f64::max);
        assert!(
            worst < 1e-12,
            "{name}: chunk and whole references' {what} differ by {worst:e}"
        );
    }
    // Row stats: the max exactly, Σ exp relative to itself, the target's logit exactly
    // (a copy); ignored rows keep the junk.
    assert_close64(
        &format!("{name} row stats"),
        &got.row_stats,
        &row_stats,
        1e-5,
        1e-4,
    );
    let c = assert_close64(&format!("{name} losses"), &got.losses, &losses, 1e-4, 1e-3);
    eprintln!("{name}: losses max |Δ| {:e}", c.max_abs);
    assert_close64(&format!("{name} stats"), &got.stats, &stats, 1e-4, 1e-3);
    let atol = 1e-4 * (stats[2] * grad_scale).max(f64::MIN_POSITIVE) as f32;
    let c = assert_close64(
        &format!("{name} dlogits"),
        &got.dlogits,
        &dlogits,
        atol,
        1e-3,
    );
    eprintln!(
        "{name}: dlogits max |Δ| {:e} (x count = {:e})",
        c.max_abs,
        c.max_abs as f64 * stats[1]
    );
}

/// (B·T, V, Vc): one chunk, chunks dividing V, a ragged last chunk, one column per chunk,
/// chunks narrower and wider than a workgroup, GPT-2's vocabulary in chunks of 4096.
const CHUNK_SIZES: [(usize, usize, usize); 8] = [
    (7, 101, 101),
    (7, 101, 17),
    (1, 101, 1),
    (192, 509, 64),
    (130, 509, 500),
    (5, 1000, 250),
    (3, 50257, 4096),
    (192, 101, 100),
];

#[test]
fn crossentropy_chunks_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(4242);
        for (bt, v, vc) in CHUNK_SIZES {
            let x = logits(&mut rng, bt, v);
            let mut t = targets(&mut rng, bt, v);
            // Targets on chunk boundaries: first and last column of a chunk, and of V.
            let edges = [0, vc - 1, vc.min(v - 1), v - 1, (2 * vc).min(v - 1)];
            for (i, &e) in edges.iter().enumerate() {
                if i + 1 < bt {
                    t[i + 1] = e as i32;
                }
            }
            if bt > 1 {
                t[0] = IGNORE_INDEX;
            }
            let got = run_chunked(ctx, &x, &t, bt, v, vc, 1.0);
            let name = format!("crossentropy chunks BT={bt} V={v} Vc={vc}");
            check_chunked(&name, &got, &x, &t, bt, v, vc, 1.0);
        }
        // grad_scale (gradient accumulation) scales the gradient only.
        let (bt, v, vc) = (7, 101, 17);
        let x = logits(&mut rng, bt, v);
        let t = targets(&mut rng, bt, v);
        let got = run_chunked(ctx, &x, &t, bt, v, vc, 0.25);
        check_chunked("chunks scaled", &got, &x, &t, bt, v, vc, 0.25);
    });
}

/// A logits chunk bound in several row chunks: contexts that plan for a small binding.
#[test]
fn crossentropy_chunks_rows_split_match_reference() {
    let mut rng = Rng::new(78);
    let (bt, v, vc) = (192, 509, 128);
    let limit = (64 * vc * 4) as u64;
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit(limit);
        let splits = ctx.row_chunks(bt, vc).len();
        assert!(splits >= 3, "expected several row chunks, got {splits}");
        let x = logits(&mut rng, bt, v);
        let t = targets(&mut rng, bt, v);
        let got = run_chunked(&ctx, &x, &t, bt, v, vc, 1.0);
        let name = format!("crossentropy chunks ({splits} row chunks) BT={bt} V={v} Vc={vc}");
        check_chunked(&name, &got, &x, &t, bt, v, vc, 1.0);
    }
}

#[test]
fn crossentropy_chunks_all_ignored_zeros_and_invalid_nan() {
    on_each_adapter(|ctx| {
        let (bt, v, vc) = (4, 101, 40);
        let mut rng = Rng::new(15);
        let x = logits(&mut rng, bt, v);
        let got = run_chunked(ctx, &x, &[IGNORE_INDEX; 4], bt, v, vc, 1.0);
        assert!(got.losses.iter().all(|&l| l == 0.0), "{:?}", got.losses);
        assert_eq!(got.stats, vec![0.0; 4]);
        assert!(got.dlogits.iter().all(|&d| d == 0.0));
        assert!(got.row_stats.iter().all(|&s| s == JUNK_ROW_STATS));
        let got = run_chunked(ctx, &x, &[5, v as i32, -1, 80], bt, v, vc, 1.0);
        assert!(got.losses[0].is_finite() && got.losses[3].is_finite());
        assert!(got.losses[1].is_nan() && got.losses[2].is_nan());
        assert!(got.stats[0].is_nan());
        assert!(
            got.dlogits[v..3 * v].iter().all(|d| d.is_nan()),
            "invalid rows not NaN"
        );
    });
}

#[test]
fn crossentropy_chunks_are_deterministic() {
    on_each_adapter(|ctx| {
        let (bt, v, vc) = (130, 509, 100);
        let mut rng = Rng::new(16);
        let x = logits(&mut rng, bt, v);
        let t = targets(&mut rng, bt, v);
        let first = run_chunked(ctx, &x, &t, bt, v, vc, 1.0);
        let again = run_chunked(ctx, &x, &t, bt, v, vc, 1.0);
        assert!(same_bits(&first.row_stats, &again.row_stats));
        assert!(same_bits(&first.losses, &again.losses));
        assert!(same_bits(&first.dlogits, &again.dlogits));
    });
}

#[test]
fn crossentropy_chunk_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let (bt, v, vc) = (4, 11, 5);
        let chunk = Tensor::zeros(ctx, "chunk", &[bt, vc], DType::F32).unwrap();
        let targets = Tensor::zeros(ctx, "targets", &[bt], DType::I32).unwrap();
        let rs = Tensor::zeros(ctx, "row stats", &[bt, ROW_STATS], DType::F32).unwrap();
        let short_rs = Tensor::zeros(ctx, "short row stats", &[bt, 2], DType::F32).unwrap();
        let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
        let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        // Columns 8..13 run past V = 11.
        let e = crossentropy_chunk_forward(&mut s, ctx, &rs, &chunk, &targets, bt, v, 8, vc);
        assert!(e.unwrap_err().to_string().contains("8..13"));
        let e = crossentropy_chunk_forward(&mut s, ctx, &rs, &chunk, &targets, bt, v, 0, 0);
        assert!(e.unwrap_err().to_string().contains("V = 11"));
        let e = crossentropy_chunk_forward(&mut s, ctx, &short_rs, &chunk, &targets, bt, v, 0, vc);
        assert!(e.unwrap_err().to_string().contains("short row stats"));
        let e = crossentropy_chunk_finish(&mut s, ctx, &losses, &short_rs, &targets, bt, v);
        assert!(e.unwrap_err().to_string().contains("short row stats"));
        let e = crossentropy_chunk_backward_inplace(
            &mut s,
            ctx,
            &chunk,
            &targets,
            &rs,
            &stats,
            bt,
            v,
            0,
            vc + 1,
            1.0,
        );
        assert!(e.unwrap_err().to_string().contains("chunk"));
        let e = crossentropy_chunk_backward_inplace(
            &mut s,
            ctx,
            &chunk,
            &targets,
            &rs,
            &stats,
            bt,
            v,
            0,
            vc,
            f32::INFINITY,
        );
        assert!(e.unwrap_err().to_string().contains("grad_scale"));
        assert_eq!(s.launches(), 0);
    });
}

/// The chunk references' loss is the whole reference's, and their gradient its
/// derivative: the chunked path changes where the numbers live, not the math.
#[test]
fn crossentropy_chunk_reference_matches_finite_differences() {
    let (bt, v, vc) = (6, 7, 3);
    let mut rng = Rng::new(22);
    let x = to_f64(&rng.vec_normal(bt * v, 1.5));
    let t = [3, IGNORE_INDEX, 0, 6, IGNORE_INDEX, 2];
    let chunk = |x: &[f64], v0: usize, n: usize| -> Vec<f64> {
        (0..bt)
            .flat_map(|r| x[r * v + v0..r * v + v0 + n].iter().copied())
            .collect()
    };
    let forward = |x: &[f64]| {
        let mut rs = vec![0f64; bt * ROW_STATS];
        for v0 in (0..v).step_by(vc) {
            let n = vc.min(v - v0);
            cpu::crossentropy_chunk_forward(&mut rs, &chunk(x, v0, n), &t, bt, v, v0, n);
        }
        let mut losses = vec![0f64; bt];
        cpu::crossentropy_chunk_finish(&mut losses, &rs, &t, bt, v);
        let mut stats = [0f64; STATS_LEN];
        cpu::crossentropy_mean(&mut stats, &losses, &t, bt);
        (rs, stats)
    };
    let (rs, stats) = forward(&x);
    let mut dx = vec![0f64; bt * v];
    for v0 in (0..v).step_by(vc) {
        let n = vc.min(v - v0);
        let mut d = chunk(&x, v0, n);
        cpu::crossentropy_chunk_backward_inplace(&mut d, &t, &rs, &stats, bt, v, v0, n, 1.0);
        for r in 0..bt {
            dx[r * v + v0..r * v + v0 + n].copy_from_slice(&d[r * n..(r + 1) * n]);
        }
    }
    assert_gradient("crossentropy_chunk", &x, &dx, |x| forward(x).1[0], 1000);
}
