//! relu_forward and relu_backward against their CPU references at feed-forward sizes
//! (N = B·T·4C, and sizes that are neither a multiple of 4 nor of the 256-wide
//! workgroup), with exact zeros (gradient 0, as torch), −0, negatives, infinities and
//! NaN; bit-exact, since both kernels only select and add. The backward reference is
//! checked by finite differences away from the kink.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::relu::{relu_backward, relu_forward};
use wgformer::reference::relu as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

/// (B, T, C); a feed-forward activation has N = B·T·4C elements.
const SIZES: [(usize, usize, usize); 4] = [(1, 1, 48), (2, 7, 80), (3, 1, 768), (3, 64, 768)];

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// (out, dinp) on the GPU; out starts as NaN (so an element no invocation writes shows
/// up), dinp at `prior`.
fn run(ctx: &GpuContext, inp: &[f32], dout: &[f32], prior: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let n = inp.len();
    let ti = Tensor::from_f32(ctx, "inp", &[n], inp).unwrap();
    let td = Tensor::from_f32(ctx, "dout", &[n], dout).unwrap();
    let to = Tensor::from_f32(ctx, "out", &[n], &vec![f32::NAN; n]).unwrap();
    let tg = Tensor::from_f32(ctx, "dinp", &[n], prior).unwrap();
    let mut s = Schedule::new("relu");
    relu_forward(&mut s, ctx, &to, &ti, n).unwrap();
    relu_backward(&mut s, ctx, &tg, &ti, &td, n).unwrap();
    s.run(ctx);
    (read(ctx, &to), read(ctx, &tg))
}

/// Compare both kernels with the reference (atol 1e-5, rtol 1e-4) and with the same
/// operations in f32 (bit for bit); returns the max |Δ| of (out, dinp).
fn check(ctx: &GpuContext, name: &str, inp: &[f32], dout: &[f32], prior: &[f32]) -> (f32, f32) {
    let n = inp.len();
    let (out, dinp) = run(ctx, inp, dout, prior);
    let mut want = vec![0f64; n];
    cpu::relu_forward(&mut want, &to_f64(inp), n);
    let mut want_d = to_f64(prior);
    cpu::relu_backward(&mut want_d, &to_f64(inp), &to_f64(dout), n);
    let f = assert_close64(&format!("relu_forward {name}"), &out, &want, 1e-5, 1e-4);
    let b = assert_close64(&format!("relu_backward {name}"), &dinp, &want_d, 1e-5, 1e-4);
    // Both kernels only select and make one f32 add, which the GPU rounds correctly:
    // the bits must equal the same operations done in f32 here.
    let want32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
    let want_d32: Vec<f32> = (0..n)
        .map(|i| prior[i] + if inp[i] > 0.0 { dout[i] } else { 0.0 })
        .collect();
    assert!(same_bits(&out, &want32), "relu_forward {name}: bits differ");
    assert!(
        same_bits(&dinp, &want_d32),
        "relu_backward {name}: bits differ"
    );
    eprintln!(
        "relu {name}: max |Δ| forward {:e}, backward {:e}",
        f.max_abs, b.max_abs
    );
    (f.max_abs, b.max_abs)
}

#[test]
fn relu_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(91);
        let mut sizes: Vec<(String, usize)> = SIZES
            .iter()
            .map(|&(b, t, c)| (format!("B={b} T={t} 4C={}", 4 * c), b * t * 4 * c))
            .collect();
        // Not a multiple of 4, nor of the workgroup; one partial workgroup; one element.
        sizes.extend([
            ("N=1".into(), 1),
            ("N=255".into(), 255),
            ("N=4099".into(), 4099),
        ]);
        for (name, n) in sizes {
            let mut inp = rng.vec_normal(n, 2.0);
            // Exact zeros of both signs among the negatives and positives.
            for i in (0..n).step_by(7) {
                inp[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
            }
            let dout = rng.vec_normal(n, 1.0);
            let prior = rng.vec_normal(n, 1.0);
            check(ctx, &name, &inp, &dout, &prior);
        }
    });
}

#[test]
fn relu_at_zero_and_special_values() {
    on_each_adapter(|ctx| {
        let inp = [
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.5,
            -3.5,
            f32::MAX,
        ];
        let n = inp.len();
        let dout = vec![2.0f32; n];
        let prior = vec![1.0f32; n];
        let (out, dinp) = run(ctx, &inp, &dout, &prior);
        // Subnormals may be flushed to zero by a driver: only their sign side is checked.
        let want_out = [
            0.0,
            0.0,
            f32::MIN_POSITIVE,
            0.0,
            1e-45,
            0.0,
            f32::INFINITY,
            0.0,
            f32::NAN,
            3.5,
            0.0,
            f32::MAX,
        ];
        for i in 0..n {
            let (got, want) = (out[i], want_out[i]);
            // WGSL lets an implementation assume no NaN (GL llvmpipe's `x <= 0.0` is true
            // for NaN), so NaN may come out as NaN or as 0.
            let ok = if want.is_nan() {
                got.is_nan() || got == 0.0
            } else if i == 4 {
                got == want || got == 0.0
            } else {
                got.to_bits() == want.to_bits()
            };
            assert!(ok, "relu_forward({}) = {got}, expected {want}", inp[i]);
        }
        // dinp = 1 + 2·[x > 0]: 0 and −0 pass nothing (torch), nor does NaN.
        let want_d = [1.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 3.0];
        for i in 0..n {
            let ok = dinp[i] == want_d[i] || (i == 4 && dinp[i] == 1.0);
            assert!(
                ok,
                "relu_backward at {}: {}, expected {}",
                inp[i], dinp[i], want_d[i]
            );
        }
    });
}

#[test]
fn relu_backward_reference_is_the_gradient() {
    let n = 64;
    let mut rng = Rng::new(92);
    // Keep |x| ≥ 0.1 so the finite difference never straddles the kink at 0.
    let inp: Vec<f64> = to_f64(&rng.vec_uniform(n, -3.0, 3.0))
        .into_iter()
        .map(|x| {
            if x.abs() < 0.1 {
                x + 0.2f64.copysign(x)
            } else {
                x
            }
        })
        .collect();
    let dout = to_f64(&rng.vec_normal(n, 1.0));
    let loss = |x: &[f64]| {
        let mut out = vec![0f64; n];
        cpu::relu_forward(&mut out, x, n);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let mut dinp = vec![0f64; n];
    cpu::relu_backward(&mut dinp, &inp, &dout, n);
    assert_gradient("relu dinp", &inp, &dinp, loss, n);
}

#[test]
fn relu_is_deterministic() {
    on_each_adapter(|ctx| {
        let n = 2 * 7 * 4 * 80 + 3;
        let mut rng = Rng::new(93);
        let inp = rng.vec_normal(n, 3.0);
        let dout = rng.vec_normal(n, 1.0);
        let prior = rng.vec_normal(n, 1.0);
        let first = run(ctx, &inp, &dout, &prior);
        let again = run(ctx, &inp, &dout, &prior);
        assert!(same_bits(&first.0, &again.0), "relu_forward bits differ");
        assert!(same_bits(&first.1, &again.1), "relu_backward bits differ");
    });
}

#[test]
fn relu_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let a = Tensor::zeros(ctx, "a", &[10], DType::F32).unwrap();
        let short = Tensor::zeros(ctx, "short", &[9], DType::F32).unwrap();
        let mut s = Schedule::new("relu");
        let e = relu_forward(&mut s, ctx, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = relu_forward(&mut s, ctx, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = relu_backward(&mut s, ctx, &a, &short, &a, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        let e = relu_backward(&mut s, ctx, &a, &a, &short, 10).unwrap_err();
        assert!(e.to_string().contains("short"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}
