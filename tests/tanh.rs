//! tanh_forward and tanh_backward against their CPU references at pooler sizes (N = B·C),
//! B·T·C, and sizes that are neither a multiple of 4 nor of the 256-wide workgroup; at
//! large |x| (exactly ±1 and a zero gradient, never NaN), at 0 and small values (relative
//! accuracy), across the kernel's switch from polynomial to exponential at |x| = 0.55;
//! the backward reference checked by finite differences; determinism.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::tanh::{tanh_backward, tanh_forward};
use wgformer::reference::tanh as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

/// (B, T, C): N = B·T·C elements; the pooler's activation is T = 1.
const SIZES: [(usize, usize, usize); 4] = [(1, 1, 48), (2, 1, 80), (3, 1, 768), (3, 64, 768)];

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// (out, dinp) on the GPU, the backward fed the forward's out; out starts as NaN (so an
/// element no invocation writes shows up), dinp at `prior`.
fn run(ctx: &GpuContext, inp: &[f32], dout: &[f32], prior: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = inp.len();
    let ti = Tensor::from_f32(ctx, "inp", &[n], inp).unwrap();
    let td = Tensor::from_f32(ctx, "dout", &[n], dout).unwrap();
    let to = Tensor::from_f32(ctx, "out", &[n], &vec![f32::NAN; n]).unwrap();
    let tg = Tensor::from_f32(ctx, "dinp", &[n], prior).unwrap();
    let mut s = Schedule::new("tanh");
    tanh_forward(&mut s, ctx, &to, &ti, n).unwrap();
    tanh_backward(&mut s, ctx, &tg, &to, &td, n).unwrap();
    s.run(ctx);
    (read(ctx, &to), read(ctx, &tg))
}

/// Compare both kernels with the reference (atol 1e-5, rtol 1e-4); returns the max |Δ|
/// of (out, dinp).
fn check(ctx: &GpuContext, name: &str, inp: &[f32], dout: &[f32], prior: &[f32]) -> (f32, f32) {
    let n = inp.len();
    let (out, dinp) = run(ctx, inp, dout, prior);
    let mut want = vec![0f64; n];
    cpu::tanh_forward(&mut want, &to_f64(inp), n);
    let mut want_d = to_f64(prior);
    cpu::tanh_backward(&mut want_d, &want, &to_f64(dout), n);
    let f = assert_close64(&format!("tanh_forward {name}"), &out, &want, 1e-5, 1e-4);
    let b = assert_close64(&format!("tanh_backward {name}"), &dinp, &want_d, 1e-5, 1e-4);
    eprintln!(
        "tanh {name}: max |Δ| forward {:e}, backward {:e}",
        f.max_abs, b.max_abs
    );
    (f.max_abs, b.max_abs)
}

#[test]
fn tanh_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(101);
        let mut sizes: Vec<(String, usize)> = SIZES
            .iter()
            .map(|&(b, t, c)| (format!("B={b} T={t} C={c}"), b * t * c))
            .collect();
        sizes.extend([
            ("N=1".into(), 1),
            ("N=255".into(), 255),
            ("N=4099".into(), 4099),
        ]);
        for (name, n) in sizes {
            let inp = rng.vec_normal(n, 1.5);
            let dout = rng.vec_normal(n, 1.0);
            let prior = rng.vec_normal(n, 1.0);
            check(ctx, &name, &inp, &dout, &prior);
        }
    });
}

#[test]
fn tanh_is_accurate_near_zero_and_at_the_seam() {
    on_each_adapter(|ctx| {
        let mut inp: Vec<f32> = vec![0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-6, 1e-3, -1e-3, 0.1];
        // Both sides of |x| = 0.55, and a dense sweep of [−10, 10].
        for k in -8..=8 {
            let x = 0.55 + k as f32 * 1e-7;
            inp.extend([x, -x]);
        }
        inp.extend((0..=2000).map(|i| -10.0 + 0.01 * i as f32));
        let n = inp.len();
        let mut rng = Rng::new(102);
        let dout = rng.vec_normal(n, 1.0);
        let prior = rng.vec_normal(n, 1.0);
        check(ctx, "seam and sweep", &inp, &dout, &prior);
        // Relative accuracy, where atol says nothing: within 4 f32 ulps of the truth.
        let (out, _) = run(ctx, &inp, &dout, &prior);
        let mut worst = 0f64;
        for (&x, &y) in inp.iter().zip(&out) {
            let want = (x as f64).tanh();
            if want != 0.0 {
                worst = worst.max(((y as f64 - want) / want).abs());
            }
        }
        eprintln!("tanh: max relative error {worst:e}");
        assert!(
            worst <= 4.0 * f32::EPSILON as f64,
            "tanh relative error {worst:e}"
        );
        assert_eq!(out[0].to_bits(), 0f32.to_bits(), "tanh(0)");
        assert_eq!(out[1].to_bits(), (-0f32).to_bits(), "tanh(-0)");
    });
}

#[test]
fn tanh_is_exact_at_large_inputs() {
    on_each_adapter(|ctx| {
        let inp = [
            20.0,
            -20.0,
            100.0,
            -100.0,
            1e4,
            -1e4,
            1e20,
            -1e20,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            9.5,
            -9.5,
        ];
        let n = inp.len();
        let dout = vec![2.0f32; n];
        let prior = vec![1.0f32; n];
        let (out, dinp) = run(ctx, &inp, &dout, &prior);
        for i in 0..n {
            let want = 1f32.copysign(inp[i]);
            assert_eq!(out[i], want, "tanh({})", inp[i]);
            // 1 − out² = 0 exactly: nothing but the prior.
            assert_eq!(dinp[i], 1.0, "tanh_backward at {}", inp[i]);
        }
    });
}

#[test]
fn tanh_backward_reference_is_the_gradient() {
    let n = 64;
    let mut rng = Rng::new(103);
    let inp = to_f64(&rng.vec_uniform(n, -4.0, 4.0));
    let dout = to_f64(&rng.vec_normal(n, 1.0));
    let forward = |x: &[f64]| {
        let mut out = vec![0f64; n];
        cpu::tanh_forward(&mut out, x, n);
        out
    };
    let loss = |x: &[f64]| {
        forward(x)
            .iter()
            .zip(&dout)
            .map(|(o, d)| o * d)
            .sum::<f64>()
    };
    let mut dinp = vec![0f64; n];
    cpu::tanh_backward(&mut dinp, &forward(&inp), &dout, n);
    assert_gradient("tanh dinp", &inp, &dinp, loss, n);
}

#[test]
fn tanh_is_deterministic() {
    on_each_adapter(|ctx| {
        let n = 3 * 768 + 5;
        let mut rng = Rng::new(104);
        let inp = rng.vec_normal(n, 3.0);
        let dout = rng.vec_normal(n, 1.0);
        let prior = rng.vec_normal(n, 1.0);
        let first = run(ctx, &inp, &dout, &prior);
        let again = run(ctx, &inp, &dout, &prior);
        assert!(same_bits(&first.0, &again.0), "tanh_forward bits differ");
        assert!(same_bits(&first.1, &again.1), "tanh_backward bits differ");
    });
}

#[test]
fn tanh_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let a = Tensor::zeros(ctx, "a", &[10], DType::F32).unwrap();
        let short = Tensor::zeros(ctx, "short", &[9], DType::F32).unwrap();
        let mut s = Schedule::new("tanh");
        let e = tanh_forward(&mut s, ctx, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = tanh_forward(&mut s, ctx, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = tanh_backward(&mut s, ctx, &short, &a, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = tanh_backward(&mut s, ctx, &a, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = tanh_backward(&mut s, ctx, &a, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}
