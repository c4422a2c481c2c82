//! residual_forward and residual_backward against their CPU references at GPT-2's
//! awkward (B, T, C) sizes; the backward reference checked by finite differences.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::residual::{residual_backward, residual_forward};
use wgformer::reference::residual as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

/// (B, T, C); the kernels see N = B·T·C.
const SIZES: [(usize, usize, usize); 5] = [
    (1, 1, 48),
    (2, 1, 80),
    (2, 7, 80),
    (3, 7, 768),
    (3, 64, 768),
];

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// (out) of the forward and (dinp1, dinp2) of the backward, run on the GPU.
fn run(
    ctx: &GpuContext,
    inp1: &[f32],
    inp2: &[f32],
    dout: &[f32],
    prior1: &[f32],
    prior2: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = inp1.len();
    let t1 = Tensor::from_f32(ctx, "inp1", &[n], inp1).unwrap();
    let t2 = Tensor::from_f32(ctx, "inp2", &[n], inp2).unwrap();
    let to = Tensor::zeros(ctx, "out", &[n], DType::F32).unwrap();
    let td = Tensor::from_f32(ctx, "dout", &[n], dout).unwrap();
    let d1 = Tensor::from_f32(ctx, "dinp1", &[n], prior1).unwrap();
    let d2 = Tensor::from_f32(ctx, "dinp2", &[n], prior2).unwrap();
    let mut s = Schedule::new("residual");
    residual_forward(&mut s, ctx, &to, &t1, &t2, n).unwrap();
    residual_backward(&mut s, ctx, &d1, &d2, &td, n).unwrap();
    s.run(ctx);
    (read(ctx, &to), read(ctx, &d1), read(ctx, &d2))
}

#[test]
fn residual_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(5);
        for (b, t, c) in SIZES {
            let n = b * t * c;
            let inp1 = rng.vec_normal(n, 1.0);
            let inp2 = rng.vec_uniform(n, -3.0, 3.0);
            let dout = rng.vec_normal(n, 1.0);
            // Gradients start non-zero: the backward must add into them.
            let prior1 = rng.vec_normal(n, 1.0);
            let prior2 = rng.vec_normal(n, 1.0);
            let (out, d1, d2) = run(ctx, &inp1, &inp2, &dout, &prior1, &prior2);

            let mut want = vec![0f64; n];
            cpu::residual_forward(&mut want, &to_f64(&inp1), &to_f64(&inp2), n);
            let (mut w1, mut w2) = (to_f64(&prior1), to_f64(&prior2));
            cpu::residual_backward(&mut w1, &mut w2, &to_f64(&dout), n);
            let size = format!("B={b} T={t} C={c}");
            let f = assert_close64(&format!("residual_forward {size}"), &out, &want, 1e-5, 1e-4);
            let d1 = assert_close64(
                &format!("residual_backward dinp1 {size}"),
                &d1,
                &w1,
                1e-5,
                1e-4,
            );
            let d2 = assert_close64(
                &format!("residual_backward dinp2 {size}"),
                &d2,
                &w2,
                1e-5,
                1e-4,
            );
            eprintln!(
                "residual {size}: max |Δ| out {:.1e}, dinp1 {:.1e}, dinp2 {:.1e}",
                f.max_abs, d1.max_abs, d2.max_abs
            );
        }
    });
}

#[test]
fn residual_backward_reference_is_the_gradient() {
    let n = 2 * 3 * 5;
    let mut rng = Rng::new(6);
    let inp1 = to_f64(&rng.vec_normal(n, 1.0));
    let inp2 = to_f64(&rng.vec_normal(n, 1.0));
    let dout = to_f64(&rng.vec_normal(n, 1.0));
    let loss = |a: &[f64], b: &[f64]| {
        let mut out = vec![0f64; n];
        cpu::residual_forward(&mut out, a, b, n);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let (mut d1, mut d2) = (vec![0f64; n], vec![0f64; n]);
    cpu::residual_backward(&mut d1, &mut d2, &dout, n);
    assert_gradient("residual dinp1", &inp1, &d1, |x| loss(x, &inp2), n);
    assert_gradient("residual dinp2", &inp2, &d2, |x| loss(&inp1, x), n);
}

#[test]
fn residual_is_deterministic() {
    on_each_adapter(|ctx| {
        let n = 3 * 7 * 80;
        let mut rng = Rng::new(7);
        let inp1 = rng.vec_normal(n, 1.0);
        let inp2 = rng.vec_normal(n, 1.0);
        let dout = rng.vec_normal(n, 1.0);
        let prior = rng.vec_normal(n, 1.0);
        let first = run(ctx, &inp1, &inp2, &dout, &prior, &prior);
        let again = run(ctx, &inp1, &inp2, &dout, &prior, &prior);
        assert!(
            same_bits(&first.0, &again.0),
            "residual_forward bits differ"
        );
        assert!(
            same_bits(&first.1, &again.1),
            "residual_backward dinp1 bits differ"
        );
        assert!(
            same_bits(&first.2, &again.2),
            "residual_backward dinp2 bits differ"
        );
    });
}

#[test]
fn residual_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let a = Tensor::zeros(ctx, "a", &[10], DType::F32).unwrap();
        let short = Tensor::zeros(ctx, "short", &[9], DType::F32).unwrap();
        let mut s = Schedule::new("residual");
        let e = residual_forward(&mut s, ctx, &a, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = residual_backward(&mut s, ctx, &a, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
    });
}
