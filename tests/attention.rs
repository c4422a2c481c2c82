//! attention_forward and attention_backward against their f64 references: the backward
//! reference against finite differences, then the kernels at awkward sizes (T = 1, 7,
//! 64 and 1024; HS = 12, 16, 64, 128, 256), with batches split over bindings, with a launch
//! grid folded past 65,535 workgroups, run twice for identical bits, and the errors a
//! caller can cause.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::attention::{
    attention_backward, attention_forward, attention_softmax_backward, attention_softmax_forward,
    SoftmaxRows,
};
use wgformer::reference::attention as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_gradient, on_each_adapter, reopen, same_bits, test_contexts, to_f64,
};

/// (B, T, C, NH): batch, sequence length, channels, heads.
type Dims = (usize, usize, usize, usize);

/// Awkward sizes: T = 1, 7, 64; HS = 12, 16, 64, 128 and the limit 256; B = 1..3.
const SIZES: [Dims; 11] = [
    (1, 1, 48, 4),
    (3, 1, 768, 12),
    (2, 7, 48, 3),
    (3, 7, 48, 4),
    (1, 7, 768, 12),
    (1, 7, 256, 2),
    (2, 64, 64, 4),
    (3, 64, 48, 4),
    (1, 64, 768, 12),
    (2, 64, 128, 2),
    (1, 64, 256, 1),
];

/// Random qkv (B, T, 3C), dout (B, T, C) and a prior dqkv the backward adds into.
fn inputs(rng: &mut Rng, (b, t, c, _): Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let qkv = rng.vec_normal(b * t * 3 * c, 1.0);
    let dout = rng.vec_uniform(b * t * c, -1.0, 1.0);
    let prior = rng.vec_uniform(b * t * 3 * c, -1.0, 1.0);
    (qkv, dout, prior)
}

/// Forward then backward in one schedule: (out, stats, dqkv = prior + gradient).
fn run_gpu(
    ctx: &GpuContext,
    qkv: &[f32],
    dout: &[f32],
    prior: &[f32],
    (b, t, c, nh): Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t_qkv = Tensor::from_f32(ctx, "qkv", &[b, t, 3 * c], qkv).unwrap();
    let t_dout = Tensor::from_f32(ctx, "dout", &[b, t, c], dout).unwrap();
    let t_dqkv = Tensor::from_f32(ctx, "dqkv", &[b, t, 3 * c], prior).unwrap();
    let t_out = Tensor::zeros(ctx, "out", &[b, t, c], DType::F32).unwrap();
    let t_stats = Tensor::zeros(ctx, "stats", &[b, nh, t], DType::F32).unwrap();
    let mut s = Schedule::new("attention");
    attention_forward(&mut s, ctx, &t_out, &t_stats, &t_qkv, b, t, c, nh).unwrap();
    attention_backward(
        &mut s, ctx, &t_dqkv, &t_dout, &t_qkv, &t_out, &t_stats, b, t, c, nh,
    )
    .unwrap();
    s.run(ctx);
    (
        ctx.block_on(t_out.read_f32(ctx)).unwrap(),
        ctx.block_on(t_stats.read_f32(ctx)).unwrap(),
        ctx.block_on(t_dqkv.read_f32(ctx)).unwrap(),
    )
}

/// The references' (out, stats, dqkv = prior + gradient).
fn run_cpu(
    qkv: &[f32],
    dout: &[f32],
    prior: &[f32],
    (b, t, c, nh): Dims,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (qkv, dout) = (to_f64(qkv), to_f64(dout));
    let mut out = vec![0f64; b * t * c];
    let mut stats = vec![0f64; b * nh * t];
    let mut dqkv = to_f64(prior);
    cpu::attention_forward(&mut out, &mut stats, &qkv, b, t, c, nh);
    cpu::attention_backward(&mut dqkv, &dout, &qkv, &out, &stats, b, t, c, nh);
    (out, stats, dqkv)
}

/// Compare one GPU run with the references at the reduction tolerances.
fn check(ctx: &GpuContext, rng: &mut Rng, dims: Dims) {
    let (qkv, dout, prior) = inputs(rng, dims);
    let (out, stats, dqkv) = run_gpu(ctx, &qkv, &dout, &prior, dims);
    let (want_out, want_stats, want_dqkv) = run_cpu(&qkv, &dout, &prior, dims);
    let co = assert_close64(
        &format!("attention_forward out {dims:?}"),
        &out,
        &want_out,
        1e-4,
        1e-3,
    );
    let cs = assert_close64(
        &format!("attention_forward stats {dims:?}"),
        &stats,
        &want_stats,
        1e-4,
        1e-3,
    );
    let cd = assert_close64(
        &format!("attention_backward dqkv {dims:?}"),
        &dqkv,
        &want_dqkv,
        1e-4,
        1e-3,
    );
    eprintln!(
        "attention {dims:?}: max |Δ| out {:e}, stats {:e}, dqkv {:e}",
        co.max_abs, cs.max_abs, cd.max_abs
    );
}

#[test]
fn attention_backward_reference_matches_finite_differences() {
    let (b, t, c, nh) = (2, 5, 6, 2); // HS = 3
    let mut rng = Rng::new(5);
    let qkv = to_f64(&rng.vec_normal(b * t * 3 * c, 1.0));
    let dout = to_f64(&rng.vec_uniform(b * t * c, -1.0, 1.0));
    let forward = |x: &[f64]| {
        let mut out = vec![0f64; b * t * c];
        let mut stats = vec![0f64; b * nh * t];
        cpu::attention_forward(&mut out, &mut stats, x, b, t, c, nh);
        (out, stats)
    };
    let (out, stats) = forward(&qkv);
    let mut dqkv = vec![0f64; qkv.len()];
    cpu::attention_backward(&mut dqkv, &dout, &qkv, &out, &stats, b, t, c, nh);
    let loss = |x: &[f64]| forward(x).0.iter().zip(&dout).map(|(o, d)| o * d).sum();
    assert_gradient("attention_backward dqkv", &qkv, &dqkv, loss, usize::MAX);

    // Gradients are added into, not written.
    let mut again = vec![1f64; qkv.len()];
    cpu::attention_backward(&mut again, &dout, &qkv, &out, &stats, b, t, c, nh);
    for (a, g) in again.iter().zip(&dqkv) {
        assert!(
            (a - 1.0 - g).abs() < 1e-12,
            "attention_backward must add into dqkv"
        );
    }
    // At T = 1 each row attends only to itself: out = v and stats = its own score.
    let (t1, hs) = (1, c / nh);
    let x = &qkv[..b * t1 * 3 * c];
    let mut out = vec![0f64; b * t1 * c];
    let mut stats = vec![0f64; b * nh * t1];
    cpu::attention_forward(&mut out, &mut stats, x, b, t1, c, nh);
    for bb in 0..b {
        assert_eq!(
            &out[bb * c..(bb + 1) * c],
            &x[bb * 3 * c + 2 * c..(bb + 1) * 3 * c]
        );
        for h in 0..nh {
            let q = &x[bb * 3 * c + h * hs..][..hs];
            let k = &x[bb * 3 * c + c + h * hs..][..hs];
            let s: f64 = q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (hs as f64).sqrt();
            assert!((stats[bb * nh + h] - s).abs() < 1e-12);
        }
    }
}

#[test]
fn attention_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(42);
        for dims in SIZES {
            check(ctx, &mut rng, dims);
        }
        // A full GPT-2 context at a small width: with 4 heads the scores (16 MiB) may
        // take the matmul form in one slice; with 8 (32 MiB) in slices of 4 heads, and
        // with 2 rows of 3 heads (24 MiB) in slices of one row; the fused kernels
        // wherever the matmul form does not run.
        check(ctx, &mut rng, (1, 1024, 48, 4));
        check(ctx, &mut rng, (1, 1024, 64, 8));
        check(ctx, &mut rng, (2, 1024, 48, 3));
        // Slices of several whole rows (a CPU adapter's 16 MiB: 4 rows of 4 heads at
        // T = 512, then 2), the shape a GPU's slices take at GPT-2's B = 16, T = 1024.
        check(ctx, &mut rng, (6, 512, 48, 4));
    });
}

/// Where attention takes the matmul form, long contexts run in slices of the (row, head)
/// grid, each within the adapter's bound (matmul_form_max_scores), covering every (row, head) once, with the
/// slices' launches in the schedule; the fused kernels at T = 1024 on every adapter
/// (a context whose matmuls run on the rows kernel).
#[test]
fn long_contexts_run_in_slices_or_fused() {
    use wgformer::gpu::MatmulKernel;
    use wgformer::kernels::attention::{
        attention_slices, matmul_form_family, matmul_form_max_scores,
    };
    on_each_adapter(|ctx| {
        for (b, t, c, nh) in [
            (1, 1024, 64, 8),
            (2, 1024, 48, 3),
            (6, 512, 48, 4),
            (5, 256, 48, 4),
            (2, 64, 48, 4),
        ] {
            let Some(slices) = attention_slices(ctx, b, t, c, nh) else {
                assert!(!matmul_form_family(ctx));
                continue;
            };
            let mut seen = vec![0; b * nh];
            for sl in &slices {
                assert!((sl.nb * sl.nh * t * t * 4) as u64 <= matmul_form_max_scores(ctx));
                assert!(sl.nb == 1 || (sl.h0, sl.nh) == (0, nh), "{sl:?}");
                for r in sl.b0..sl.b0 + sl.nb {
                    for h in sl.h0..sl.h0 + sl.nh {
                        seen[r * nh + h] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{b}x{t}x{c}x{nh}: {slices:?}");
            let whole = (b * nh * t * t * 4) as u64 <= matmul_form_max_scores(ctx);
            assert_eq!(slices.len() == 1, whole, "{slices:?}");
            let qkv = Tensor::zeros(ctx, "qkv", &[b, t, 3 * c], DType::F32).unwrap();
            let out = Tensor::zeros(ctx, "out", &[b, t, c], DType::F32).unwrap();
            let stats = Tensor::zeros(ctx, "stats", &[b, nh, t], DType::F32).unwrap();
            let mut s = Schedule::new("attention slices");
            attention_forward(&mut s, ctx, &out, &stats, &qkv, b, t, c, nh).unwrap();
            let softmaxes = s
                .launch_labels()
                .iter()
                .filter(|l| l.starts_with("attention_softmax_forward"))
                .count();
            assert_eq!(softmaxes, slices.len());
        }
        let fused = reopen(ctx).with_matmul_kernel(MatmulKernel::Rows);
        assert!(attention_slices(&fused, 1, 1024, 64, 8).is_none());
        check(&fused, &mut Rng::new(10), (1, 1024, 64, 8));
    });
}

#[test]
fn attention_is_deterministic() {
    on_each_adapter(|ctx| {
        let dims = (2, 64, 48, 4);
        let (qkv, dout, prior) = inputs(&mut Rng::new(3), dims);
        let (out, stats, dqkv) = run_gpu(ctx, &qkv, &dout, &prior, dims);
        for _ in 0..2 {
            let (out2, stats2, dqkv2) = run_gpu(ctx, &qkv, &dout, &prior, dims);
            assert!(same_bits(&out, &out2), "attention_forward out changed bits");
            assert!(
                same_bits(&stats, &stats2),
                "attention_forward stats changed bits"
            );
            assert!(
                same_bits(&dqkv, &dqkv2),
                "attention_backward dqkv changed bits"
            );
        }
    });
}

#[test]
fn attention_splits_batches_over_bindings() {
    // One batch row of qkv (64 × 144 floats) is 36,864 bytes: a 40,000-byte binding
    // limit makes each of the three batch rows its own launch.
    let dims @ (b, t, c, nh) = (3, 64, 48, 4);
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit(40_000);
        let qkv = Tensor::zeros(&ctx, "qkv", &[b, t, 3 * c], DType::F32).unwrap();
        let out = Tensor::zeros(&ctx, "out", &[b, t, c], DType::F32).unwrap();
        let stats = Tensor::zeros(&ctx, "stats", &[b, nh, t], DType::F32).unwrap();
        let mut s = Schedule::new("attention chunks");
        attention_forward(&mut s, &ctx, &out, &stats, &qkv, b, t, c, nh).unwrap();
        assert_eq!(s.launches(), b, "one forward launch per batch row");
        check(&ctx, &mut Rng::new(8), dims);
    }
}

#[test]
fn attention_folds_wide_launches() {
    // One workgroup per (b, h, block of 64 positions): B·NH = 2 · 32,769 heads at T = 7
    // is 65,538 workgroups, more than one dimension's 65,535, so the grid is folded into
    // 2-D (with spare workgroups the kernels must skip). HS = 1 keeps it small.
    on_each_adapter(|ctx| {
        let nh = 32_769;
        check(ctx, &mut Rng::new(9), (2, 7, nh, nh));
    });
}

#[test]
fn attention_errors_name_the_problem() {
    on_each_adapter(|ctx| {
        let tensor = |label: &str, n: usize| Tensor::zeros(ctx, label, &[n], DType::F32).unwrap();
        let mut s = Schedule::new("attention errors");
        // HS = 257 is over the limit of 256.
        let (b, t, c, nh) = (1, 2, 514, 2);
        let (out, stats, qkv) = (
            tensor("out", b * t * c),
            tensor("stats", b * nh * t),
            tensor("qkv", b * t * 3 * c),
        );
        let e = attention_forward(&mut s, ctx, &out, &stats, &qkv, b, t, c, nh).unwrap_err();
        assert!(e.to_string().contains("256"), "{e}");
        let e = attention_backward(&mut s, ctx, &qkv, &out, &qkv, &out, &stats, b, t, c, nh)
            .unwrap_err();
        assert!(e.to_string().contains("256"), "{e}");
        // C not a multiple of NH.
        let e = attention_forward(&mut s, ctx, &out, &stats, &qkv, b, t, c, 5).unwrap_err();
        assert!(e.to_string().contains("5 heads"), "{e}");
        // A tensor of the wrong size is named.
        let (b, t, c, nh) = (2, 7, 48, 4);
        let (out, stats, qkv, short) = (
            tensor("out", b * t * c),
            tensor("stats", b * nh * t),
            tensor("qkv", b * t * 3 * c),
            tensor("short_stats", b * nh * t - 1),
        );
        let e = attention_forward(&mut s, ctx, &out, &short, &qkv, b, t, c, nh).unwrap_err();
        assert!(e.to_string().contains("short_stats"), "{e}");
        let e = attention_backward(&mut s, ctx, &out, &out, &qkv, &out, &stats, b, t, c, nh)
            .unwrap_err();
        assert!(e.to_string().contains("tensor out"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}

/// The matmul form's softmax kernels, one invocation per row (CPU adapters) and one
/// workgroup per row (GPUs), each on every adapter: p and L from scores, p rebuilt from
/// L, and ds·scale from dp, against f64, causal, at T under and over the 128 invocations
/// of a row's workgroup; and the same bits on a second run.
#[test]
fn softmax_kernels_match_reference() {
    let (heads, hs) = (3, 16);
    let scale = 1.0 / (hs as f64).sqrt();
    for ctx in test_contexts(&Needs::default()) {
        for t in [5, 130, 300] {
            let mut rng = Rng::new(61 + t as u64);
            let scores = rng.vec_normal(heads * t * t, 3.0);
            let dp = rng.vec_uniform(heads * t * t, -1.0, 1.0);
            // f64: p, L, ds·scale per row r = h·T + i, columns j ≤ i.
            let (mut p, mut l, mut ds) = (
                vec![0.0; scores.len()],
                vec![0.0; heads * t],
                vec![0.0; scores.len()],
            );
            for (r, lse) in l.iter_mut().enumerate() {
                let (i, row) = (r % t, r * t);
                let x: Vec<f64> = (0..=i).map(|j| scores[row + j] as f64 * scale).collect();
                let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                *lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                for (j, xj) in x.iter().enumerate() {
                    p[row + j] = (xj - *lse).exp();
                }
                let d: f64 = (0..=i).map(|j| p[row + j] * dp[row + j] as f64).sum();
                for j in 0..=i {
                    ds[row + j] = p[row + j] * (dp[row + j] as f64 - d) * scale;
                }
            }
            for kernel in [SoftmaxRows::PerInvocation, SoftmaxRows::PerWorkgroup] {
                let run = || {
                    let att = Tensor::from_f32(&ctx, "att", &[heads, t, t], &scores).unwrap();
                    let stats = Tensor::zeros(&ctx, "stats", &[heads, t], DType::F32).unwrap();
                    let datt = Tensor::from_f32(&ctx, "datt", &[heads, t, t], &dp).unwrap();
                    let again = Tensor::from_f32(&ctx, "again", &[heads, t, t], &scores).unwrap();
                    let mut s = Schedule::new("softmax");
                    let scores_rows = heads * t;
                    let st = stats.rows_slot(0..heads, t);
                    attention_softmax_forward(
                        &mut s,
                        &ctx,
                        kernel,
                        att.rows_slot(0..scores_rows, t),
                        st,
                        heads,
                        t,
                        hs,
                        false,
                        "p",
                    )
                    .unwrap();
                    attention_softmax_forward(
                        &mut s,
                        &ctx,
                        kernel,
                        again.rows_slot(0..scores_rows, t),
                        st,
                        heads,
                        t,
                        hs,
                        true,
                        "again",
                    )
                    .unwrap();
                    attention_softmax_backward(
                        &mut s,
                        &ctx,
                        kernel,
                        datt.rows_slot(0..scores_rows, t),
                        att.rows_slot(0..scores_rows, t),
                        heads,
                        t,
                        hs,
                        "ds",
                    )
                    .unwrap();
                    s.run(&ctx);
                    let r = |x: &Tensor| ctx.block_on(x.read_f32(&ctx)).unwrap();
                    [r(&att), r(&stats), r(&again), r(&datt)]
                };
                let got = run();
                let what = |x: &str| format!("{kernel:?} T={t} {x}");
                assert_close64(&what("p"), &got[0], &p, 1e-6, 1e-5);
                assert_close64(&what("L"), &got[1], &l, 1e-5, 1e-5);
                assert_close64(&what("p rebuilt"), &got[2], &p, 1e-6, 1e-5);
                let cl = assert_close64(&what("ds"), &got[3], &ds, 1e-6, 1e-4);
                eprintln!("{}: ds max |Δ| {:.1e}", what("softmax"), cl.max_abs);
                for (a, b) in got.iter().zip(&run()) {
                    assert!(same_bits(a, b), "{}: a second run differs", what("softmax"));
                }
            }
        }
    }
}
