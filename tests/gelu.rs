//! gelu_forward and gelu_backward against their CPU references at GPT-2's MLP sizes
//! (N = B·T·4C), at large |x| where a driver's tanh may give NaN, and the backward
//! reference checked by finite differences.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::gelu::{gelu_backward, gelu_forward};
use wgformer::reference::gelu as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

/// (B, T, C); the MLP's activation has N = B·T·4C elements.
const SIZES: [(usize, usize, usize); 4] = [(1, 1, 48), (2, 7, 80), (3, 1, 768), (3, 64, 768)];

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// (out, dinp) on the GPU; dinp starts at `prior`.
fn run(ctx: &GpuContext, inp: &[f32], dout: &[f32], prior: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = inp.len();
    let ti = Tensor::from_f32(ctx, "inp", &[n], inp).unwrap();
    let td = Tensor::from_f32(ctx, "dout", &[n], dout).unwrap();
    let to = Tensor::zeros(ctx, "out", &[n], DType::F32).unwrap();
    let tg = Tensor::from_f32(ctx, "dinp", &[n], prior).unwrap();
    let mut s = Schedule::new("gelu");
    gelu_forward(&mut s, ctx, &to, &ti, n).unwrap();
    gelu_backward(&mut s, ctx, &tg, &ti, &td, n).unwrap();
    s.run(ctx);
    (read(ctx, &to), read(ctx, &tg))
}

/// Compare both kernels with the reference; returns the max |Δ| of (out, dinp).
fn check(ctx: &GpuContext, name: &str, inp: &[f32], dout: &[f32], prior: &[f32]) -> (f32, f32) {
    let n = inp.len();
    let (out, dinp) = run(ctx, inp, dout, prior);
    let mut want = vec![0f64; n];
    cpu::gelu_forward(&mut want, &to_f64(inp), n);
    let mut want_d = to_f64(prior);
    cpu::gelu_backward(&mut want_d, &to_f64(inp), &to_f64(dout), n);
    let f = assert_close64(&format!("gelu_forward {name}"), &out, &want, 1e-5, 1e-4);
    let b = assert_close64(&format!("gelu_backward {name}"), &dinp, &want_d, 1e-5, 1e-4);
    eprintln!(
        "gelu {name}: max |Δ| forward {:e}, backward {:e}",
        f.max_abs, b.max_abs
    );
    (f.max_abs, b.max_abs)
}

#[test]
fn gelu_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(9);
        for (b, t, c) in SIZES {
            let n = b * t * 4 * c;
            let inp = rng.vec_normal(n, 2.0);
            let dout = rng.vec_normal(n, 1.0);
            let prior = rng.vec_normal(n, 1.0);
            check(
                ctx,
                &format!("B={b} T={t} 4C={}", 4 * c),
                &inp,
                &dout,
                &prior,
            );
        }
    });
}

#[test]
fn gelu_is_finite_and_exact_at_large_inputs() {
    on_each_adapter(|ctx| {
        let mut inp: Vec<f32> = vec![
            20.0, -20.0, 100.0, -100.0, 1e4, -1e4, 1e20, -1e20, 0.0, -0.0, 9.0, -9.0, 7.0, -7.0,
            5.0, -5.0, 1e-3, -1e-3,
        ];
        // Sweep through the region where tanh saturates in f32.
        inp.extend((0..400).map(|i| -20.0 + 0.1 * i as f32));
        let n = inp.len();
        let dout: Vec<f32> = (0..n).map(|i| 1.0 - 0.003 * i as f32).collect();
        let prior = vec![0.0f32; n];
        check(ctx, "large |x|", &inp, &dout, &prior);
        let (out, dinp) = run(ctx, &inp, &dout, &prior);
        for (i, &x) in inp.iter().enumerate().take(8) {
            let (o, d) = (out[i], dinp[i]);
            assert!(o.is_finite() && d.is_finite(), "gelu at x = {x}: {o}, {d}");
            let (o_want, d_want) = if x > 0.0 { (x, dout[i]) } else { (0.0, 0.0) };
            assert_eq!((o, d), (o_want, d_want), "gelu at x = {x}");
        }
    });
}

#[test]
fn gelu_backward_reference_is_the_gradient() {
    let n = 64;
    let mut rng = Rng::new(10);
    let inp = to_f64(&rng.vec_uniform(n, -6.0, 6.0));
    let dout = to_f64(&rng.vec_normal(n, 1.0));
    let loss = |x: &[f64]| {
        let mut out = vec![0f64; n];
        cpu::gelu_forward(&mut out, x, n);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let mut dinp = vec![0f64; n];
    cpu::gelu_backward(&mut dinp, &inp, &dout, n);
    assert_gradient("gelu dinp", &inp, &dinp, loss, n);
}

#[test]
fn gelu_is_deterministic() {
    on_each_adapter(|ctx| {
        let n = 2 * 7 * 4 * 80;
        let mut rng = Rng::new(11);
        let inp = rng.vec_normal(n, 3.0);
        let dout = rng.vec_normal(n, 1.0);
        let prior = rng.vec_normal(n, 1.0);
        let first = run(ctx, &inp, &dout, &prior);
        let again = run(ctx, &inp, &dout, &prior);
        assert!(same_bits(&first.0, &again.0), "gelu_forward bits differ");
        assert!(same_bits(&first.1, &again.1), "gelu_backward bits differ");
    });
}

#[test]
fn gelu_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let a = Tensor::zeros(ctx, "a", &[10], DType::F32).unwrap();
        let short = Tensor::zeros(ctx, "short", &[9], DType::F32).unwrap();
        let mut s = Schedule::new("gelu");
        let e = gelu_forward(&mut s, ctx, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = gelu_backward(&mut s, ctx, &a, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
    });
}
