//! matmul_forward against its CPU reference, at the sizes the foundation issue names
//! and in every form the backward pass and the tied classifier will use.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::matmul::{matmul_forward, Gemm};
use wgformer::reference::matmul as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, to_f64};

/// (M, K, N): rows, reduction, columns. The last is a GPT-2 124M MLP at T = 256.
const SIZES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (7, 13, 5),
    (127, 129, 65),
    (64, 64, 64),
    (256, 768, 3072),
];

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

fn run_forward(
    ctx: &GpuContext,
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (m, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let ti = Tensor::from_f32(ctx, "inp", &[m, k], inp).unwrap();
    let tw = Tensor::from_f32(ctx, "weight", &[k, n], w).unwrap();
    let tb = bias.map(|b| Tensor::from_f32(ctx, "bias", &[n], b).unwrap());
    let to = Tensor::zeros(ctx, "out", &[m, n], DType::F32).unwrap();
    let mut s = Schedule::new("matmul");
    matmul_forward(&mut s, ctx, &to, &ti, &tw, tb.as_ref(), m, k, n).unwrap();
    s.run(ctx);
    ctx.block_on(to.read_f32(ctx)).unwrap()
}

#[test]
fn matmul_forward_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(42);
        for (m, k, n) in SIZES {
            let inp = rng.vec_uniform(m * k, -1.0, 1.0);
            let w = rng.vec_normal(k * n, 0.1);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            for with_bias in [true, false] {
                let b = with_bias.then_some(bias.as_slice());
                let got = run_forward(ctx, &inp, &w, b, (m, k, n));
                let mut want = vec![0f64; m * n];
                let b64 = b.map(to_f64);
                cpu::matmul_forward(
                    &mut want,
                    &to_f64(&inp),
                    &to_f64(&w),
                    b64.as_deref(),
                    m,
                    k,
                    n,
                );
                let name = format!("matmul_forward {m}x{k}x{n} bias={with_bias}");
                assert_close64(&name, &got, &want, 1e-4, 1e-3);
            }
        }
    });
}

#[test]
fn matmul_is_deterministic() {
    on_each_adapter(|ctx| {
        let (m, k, n) = (127, 129, 65);
        let mut rng = Rng::new(3);
        let inp = rng.vec_uniform(m * k, -1.0, 1.0);
        let w = rng.vec_uniform(k * n, -1.0, 1.0);
        let first = run_forward(ctx, &inp, &w, None, (m, k, n));
        for _ in 0..3 {
            let again = run_forward(ctx, &inp, &w, None, (m, k, n));
            assert!(
                same_bits(&first, &again),
                "matmul gave different bits on a second run"
            );
        }
    });
}

#[test]
fn gemm_transposed_and_accumulating_forms_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(11);
        for (m, k, n) in [(7, 13, 5), (65, 130, 67)] {
            let a = rng.vec_uniform(m * k, -1.0, 1.0); // (M, K)
            let w = rng.vec_uniform(k * n, -1.0, 1.0); // (K, N)
            let prior = rng.vec_uniform(m * n, -1.0, 1.0);
            let mut plain = vec![0f64; m * n];
            cpu::matmul_forward(&mut plain, &to_f64(&a), &to_f64(&w), None, m, k, n);
            for (trans_a, trans_b, accumulate) in [
                (false, true, false),
                (true, false, false),
                (true, false, true),
                (false, true, true),
                (true, true, true),
            ] {
                let a_stored = if trans_a {
                    transpose(&a, m, k)
                } else {
                    a.clone()
                };
                let w_stored = if trans_b {
                    transpose(&w, k, n)
                } else {
                    w.clone()
                };
                let ta = Tensor::from_f32(ctx, "a", &[a.len()], &a_stored).unwrap();
                let tw = Tensor::from_f32(ctx, "w", &[w.len()], &w_stored).unwrap();
                let to = Tensor::from_f32(ctx, "out", &[m, n], &prior).unwrap();
                let gemm = Gemm {
                    trans_a,
                    trans_b,
                    accumulate,
                };
                let mut s = Schedule::new("gemm");
                gemm.record(&mut s, ctx, &to, &ta, &tw, None, m, k, n)
                    .unwrap();
                s.run(ctx);
                let got = ctx.block_on(to.read_f32(ctx)).unwrap();
                let want: Vec<f64> = if accumulate {
                    plain
                        .iter()
                        .zip(&prior)
                        .map(|(x, &p)| x + p as f64)
                        .collect()
                } else {
                    plain.clone()
                };
                assert_close64(&format!("{gemm:?} {m}x{k}x{n}"), &got, &want, 1e-4, 1e-3);
            }
        }
    });
}
