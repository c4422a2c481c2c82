//! GradNorm (gradnorm_partial + gradnorm_finish) against the f64 reference: the global
//! norm over tensors of awkward sizes, the clip scale with clipping that bites, that does
//! not, and that is off; the binding-chunk path; more partials than one workgroup; the
//! same bits run after run; errors that name the tensor.

use wgformer::gpu::{GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::gradnorm::{gradnorm_slots, GradNorm};
use wgformer::reference::gradnorm as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, test_contexts, to_f64};

/// Gradient sizes: a scalar, a tiny bias, a small matrix, one over 4096-element blocks.
const SIZES: [usize; 4] = [1, 7, 1000, 100_003];

/// Run `f` on each test context planned as if a binding held only `bytes`.
fn on_each_small_binding_adapter(bytes: u64, f: impl Fn(&GpuContext)) {
    for ctx in test_contexts(&Needs::default()) {
        f(&ctx.with_binding_limit(bytes));
    }
}

fn random_grads(rng: &mut Rng, sizes: &[usize]) -> Vec<Vec<f32>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| rng.vec_normal(n, 0.5 + i as f32))
        .collect()
}

/// Norm state `[norm, clip_scale, Σ g², max_norm]` of `grads` on the GPU.
fn run_gradnorm(ctx: &GpuContext, grads: &[Vec<f32>], max_norm: f32) -> Vec<f32> {
    let tensors: Vec<Tensor> = grads
        .iter()
        .enumerate()
        .map(|(i, g)| Tensor::from_f32(ctx, &format!("grad{i}"), &[g.len()], g).unwrap())
        .collect();
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let gn = GradNorm::new(ctx, &refs).unwrap();
    let mut s = Schedule::new("gradnorm");
    gn.record(&mut s, ctx, &refs, max_norm).unwrap();
    s.run(ctx);
    ctx.block_on(gn.state.read_f32(ctx)).unwrap()
}

fn reference(grads: &[Vec<f32>], max_norm: f32) -> Vec<f64> {
    let g64: Vec<Vec<f64>> = grads.iter().map(|g| to_f64(g)).collect();
    let refs: Vec<&[f64]> = g64.iter().map(|g| g.as_slice()).collect();
    let mut want = vec![0f64; cpu::NORM_STATE_LEN];
    cpu::gradnorm(&mut want, &refs, max_norm as f64);
    want
}

/// Check norm, clip scale and Σ g² at reduction tolerances, for clipping that bites
/// (max_norm a tenth of the norm), that does not (ten times the norm), and off (0).
fn check_all_clip_modes(ctx: &GpuContext, grads: &[Vec<f32>], what: &str) {
    let norm = reference(grads, 0.0)[0] as f32;
    for max_norm in [0.1 * norm, 10.0 * norm, 0.0, -1.0] {
        let got = run_gradnorm(ctx, grads, max_norm);
        let want = reference(grads, max_norm);
        let c = assert_close64(
            &format!("gradnorm {what} max_norm={max_norm}"),
            &got,
            &want,
            1e-4,
            1e-3,
        );
        eprintln!(
            "gradnorm {what} max_norm={max_norm}: norm {} clip {} max |Δ| {:e} rel {:e}",
            got[0], got[1], c.max_abs, c.max_rel
        );
        if max_norm > 0.0 && max_norm < norm {
            assert!(got[1] < 0.2, "clipping should bite: {got:?}");
        } else {
            assert_eq!(got[1], 1.0, "clipping should not bite: {got:?}");
        }
    }
}

#[test]
fn gradnorm_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(17);
        let grads = random_grads(&mut rng, &SIZES);
        check_all_clip_modes(ctx, &grads, "sizes 1,7,1000,100003");
        // Each size alone, including the one-element tensor.
        for g in &grads {
            let got = run_gradnorm(ctx, std::slice::from_ref(g), 0.0);
            let want = reference(std::slice::from_ref(g), 0.0);
            assert_close64(&format!("gradnorm n={}", g.len()), &got, &want, 1e-4, 1e-3);
        }
    });
}

#[test]
fn gradnorm_sums_more_partials_than_one_workgroup_has_invocations() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(5);
        // 257 blocks of 4096 and a tail: 258 slots from one tensor, plus small ones.
        let grads = random_grads(&mut rng, &[257 * 4096 + 3, 7, 1]);
        let slots: usize = grads.iter().map(|g| gradnorm_slots(ctx, g.len())).sum();
        assert!(slots > 256, "only {slots} partial slots");
        check_all_clip_modes(ctx, &grads, "258+2 slots");
    });
}

#[test]
fn gradnorm_of_tensors_larger_than_one_binding_matches_reference() {
    // 64 KiB bindings: the 100,003-element gradient is bound in 7 chunks.
    on_each_small_binding_adapter(64 << 10, |ctx| {
        assert!(ctx.row_chunks(100_003, 1).len() > 1, "no chunking happened");
        let mut rng = Rng::new(23);
        let grads = random_grads(&mut rng, &SIZES);
        check_all_clip_modes(ctx, &grads, "chunked");
    });
}

#[test]
fn gradnorm_is_deterministic() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(99);
        let grads = random_grads(&mut rng, &[257 * 4096 + 3, 100_003, 7]);
        let first = run_gradnorm(ctx, &grads, 1.0);
        for _ in 0..2 {
            let again = run_gradnorm(ctx, &grads, 1.0);
            assert!(
                same_bits(&first, &again),
                "gradnorm gave different bits on a second run: {first:?} vs {again:?}"
            );
        }
    });
}

#[test]
fn gradnorm_errors_name_the_tensor() {
    on_each_adapter(|ctx| {
        let a = Tensor::from_f32(ctx, "h.0.attn.c_attn.weight.grad", &[7], &[1.0; 7]).unwrap();
        let b = Tensor::from_f32(ctx, "h.0.ln_1.bias.grad", &[5], &[1.0; 5]).unwrap();
        let gn = GradNorm::new(ctx, &[&a, &b]).unwrap();
        let mut s = Schedule::new("gradnorm errors");
        let e = gn.record(&mut s, ctx, &[&b, &a], 1.0).unwrap_err();
        assert!(e.to_string().contains("h.0.ln_1.bias.grad"), "{e}");
        let e = gn.record(&mut s, ctx, &[&a], 1.0).unwrap_err();
        assert!(e.to_string().contains("planned for 2"), "{e}");
    });
}

#[test]
fn gradnorm_reference_is_clip_grad_norm() {
    // ‖(3, 4)‖ = 5; clip_grad_norm_(max_norm=1) scales by 1 / (5 + 1e-6).
    let mut st = [0f64; 5];
    cpu::gradnorm(&mut st, &[&[3.0], &[4.0]], 1.0);
    assert_eq!(st, [5.0, 1.0 / (5.0 + 1e-6), 25.0, 1.0, 0.0]);
    cpu::gradnorm(&mut st, &[&[3.0], &[4.0]], 0.0);
    assert_eq!(st[1], 1.0);
    cpu::gradnorm(&mut st, &[&[3.0], &[4.0]], 6.0);
    assert_eq!(st[1], 1.0);
}
