//! dropout_forward and dropout_backward against their CPU references: the same mask bit
//! for bit (integer hashing, so exact on every adapter) at awkward sizes, chunked
//! bindings, rates 0 (identity) to 0.9, the fraction dropped, masks that differ by seed,
//! counter and site, determinism, the backward's mask equal to the forward's, and the
//! reference gradient against finite differences.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::dropout::{dropout_backward, dropout_forward, DropoutStep};
use wgformer::reference::dropout as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_gradient, on_each_adapter, same_bits, test_contexts, to_f64};

const SIZES: [usize; 5] = [1, 7, 255, 257, 100_003];

/// Run forward on `x` and backward on `dx` (both in place) and read both back.
#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &GpuContext,
    x: &[f32],
    dx: &[f32],
    seed: u64,
    counter: u32,
    p: f32,
    site: u32,
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len();
    let tx = Tensor::from_f32(ctx, "x", &[n], x).unwrap();
    let tdx = Tensor::from_f32(ctx, "dx", &[n], dx).unwrap();
    let step = DropoutStep::tensor(ctx, "dropout step").unwrap();
    DropoutStep::new(seed, counter).write(ctx, &step).unwrap();
    let mut s = Schedule::new("dropout");
    dropout_forward(&mut s, ctx, &tx, &step, n, p, site).unwrap();
    dropout_backward(&mut s, ctx, &tdx, &step, n, p, site).unwrap();
    s.run(ctx);
    (
        ctx.block_on(tx.read_f32(ctx)).unwrap(),
        ctx.block_on(tdx.read_f32(ctx)).unwrap(),
    )
}

/// The reference's result, narrowed: exact, since x · scale of two f32 values is exact in
/// f64 and rounds to the f32 product.
fn reference(x: &[f32], seed: u64, counter: u32, p: f32, site: u32) -> Vec<f32> {
    let mut v = to_f64(x);
    cpu::dropout_forward(&mut v, seed, counter, x.len(), p, site);
    v.iter().map(|&e| e as f32).collect()
}

#[test]
fn dropout_matches_reference_bit_for_bit() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(3);
        for n in SIZES {
            for (p, seed, counter, site) in [(0.0, 1, 0, 0), (0.1, 2, 5, 3), (0.5, u64::MAX, 7, 9)]
            {
                let x = rng.vec_normal(n, 1.0);
                let dx = rng.vec_normal(n, 1.0);
                let (gx, gdx) = run(ctx, &x, &dx, seed, counter, p, site);
                let want_x = reference(&x, seed, counter, p, site);
                let want_dx = reference(&dx, seed, counter, p, site);
                assert!(same_bits(&gx, &want_x), "forward n={n} p={p}");
                assert!(same_bits(&gdx, &want_dx), "backward n={n} p={p}");
                if p == 0.0 {
                    assert!(same_bits(&gx, &x), "p = 0 is the identity");
                }
                // The backward pass drops exactly what the forward dropped.
                for (a, b) in gx.iter().zip(&gdx) {
                    assert_eq!(*a == 0.0, *b == 0.0);
                }
            }
        }
    });
}

#[test]
fn dropout_chunked_bindings_match_reference() {
    // 4 KiB per binding: a 10,007-element tensor is launched in several chunks, whose global
    // indices must give the unchunked mask.
    let n = 10_007;
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit(4096);
        let mut rng = Rng::new(4);
        let x = rng.vec_normal(n, 1.0);
        let (gx, _) = run(&ctx, &x, &x, 11, 3, 0.3, 2);
        assert!(same_bits(&gx, &reference(&x, 11, 3, 0.3, 2)));
    }
}

#[test]
fn dropout_rate_and_streams() {
    let n = 200_000u32;
    for p in [0.1f32, 0.5, 0.9] {
        let dropped = (0..n)
            .filter(|&i| !cpu::dropout_keep(9, 1, 0, i, p))
            .count();
        let frac = dropped as f64 / n as f64;
        // Binomial: the standard deviation is below 0.0012 at n = 200,000.
        assert!((frac - p as f64).abs() < 0.006, "p = {p}: dropped {frac}");
    }
    // Different seeds, counters and sites give different, uncorrelated masks.
    let mask = |seed, counter, site| -> Vec<bool> {
        (0..n)
            .map(|i| cpu::dropout_keep(seed, counter, site, i, 0.5))
            .collect()
    };
    let base = mask(1, 0, 0);
    for other in [
        mask(2, 0, 0),
        mask(1, 1, 0),
        mask(1, 0, 1),
        mask(1 << 32, 0, 0),
    ] {
        let agree = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        let frac = agree as f64 / n as f64;
        assert!(
            (frac - 0.5).abs() < 0.01,
            "masks agree on {frac} of elements"
        );
    }
}

#[test]
fn dropout_is_deterministic() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(5);
        let x = rng.vec_normal(4099, 2.0);
        let a = run(ctx, &x, &x, 42, 17, 0.2, 1);
        let b = run(ctx, &x, &x, 42, 17, 0.2, 1);
        assert!(same_bits(&a.0, &b.0) && same_bits(&a.1, &b.1));
        let c = run(ctx, &x, &x, 42, 18, 0.2, 1);
        assert!(!same_bits(&a.0, &c.0), "a new counter draws a new mask");
    });
}

#[test]
fn dropout_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let x = Tensor::zeros(ctx, "activations", &[10], DType::F32).unwrap();
        let step = DropoutStep::tensor(ctx, "dropout step").unwrap();
        let mut s = Schedule::new("bad");
        let e = dropout_forward(&mut s, ctx, &x, &step, 11, 0.1, 0).unwrap_err();
        assert!(e.to_string().contains("activations"), "{e}");
        let e = dropout_forward(&mut s, ctx, &x, &step, 10, 1.0, 0).unwrap_err();
        assert!(e.to_string().contains("dropout rate"), "{e}");
        let e = dropout_backward(&mut s, ctx, &x, &x, 10, 0.1, 0).unwrap_err();
        assert!(e.to_string().contains("activations"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}

/// The backward reference is the derivative of Σ forward(x) · dout.
#[test]
fn dropout_backward_reference_matches_finite_differences() {
    let n = 64;
    let mut rng = Rng::new(6);
    let x = to_f64(&rng.vec_normal(n, 1.0));
    let dout = to_f64(&rng.vec_normal(n, 1.0));
    let loss = |x: &[f64]| {
        let mut out = x.to_vec();
        cpu::dropout_forward(&mut out, 3, 4, n, 0.25, 5);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let mut dx = dout.clone();
    cpu::dropout_backward(&mut dx, 3, 4, n, 0.25, 5);
    assert_gradient("dropout_backward", &x, &dx, loss, 1000);
}
