//! adamw_update (with GradNorm's clip scale) against the f64 reference over 5 steps of a
//! schedule recorded once and replayed with a new learning rate, step number and
//! gradients each step, one submit per step: weight decay 0.1 and 0, clipping that
//! bites, that does not and that is off, awkward sizes, the binding-chunk path, the same
//! bits run after run, and errors that name the tensor.

use wgformer::gpu::{GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::adamw::{adamw_update, AdamwStep};
use wgformer::kernels::gradnorm::GradNorm;
use wgformer::reference::{adamw as cpu, gradnorm as cpu_norm};
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, test_contexts, to_f64};

/// (elements, weight decay): decayed "matrices" and undecayed "biases" of awkward sizes.
const TENSORS: [(usize, f32); 4] = [(1, 0.0), (7, 0.1), (1000, 0.0), (100_003, 0.1)];
const STEPS: u32 = 5;
const BETAS: (f32, f32) = (0.9, 0.999);
const EPS: f32 = 1e-8;

/// Learning rate of step t (from 1): warm-up then decay, so every step differs.
fn lr_at(t: u32) -> f32 {
    [3e-3, 1e-2, 8e-3, 5e-3, 2e-3][(t as usize - 1) % 5]
}

/// Run `f` on each test context planned as if a binding held only `bytes`.
fn on_each_small_binding_adapter(bytes: u64, f: impl Fn(&GpuContext)) {
    for ctx in test_contexts(&Needs::default()) {
        f(&ctx.with_binding_limit(bytes));
    }
}

/// How clipping is set for a run: a multiple of the first step's gradient norm, or off.
#[derive(Clone, Copy, Debug)]
enum Clip {
    Bites,
    DoesNotBite,
    Off,
}

struct Outcome {
    params: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// [norm, clip_scale] of each step.
    norms: Vec<[f32; 2]>,
}

/// Initial parameters and the gradients of every step (seeded).
fn data(seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<Vec<f32>>>) {
    let mut rng = Rng::new(seed);
    let params = TENSORS
        .iter()
        .map(|&(n, _)| rng.vec_uniform(n, -1.0, 1.0))
        .collect();
    let grads = (0..STEPS)
        .map(|_| {
            TENSORS
                .iter()
                .map(|&(n, _)| rng.vec_normal(n, 0.1))
                .collect()
        })
        .collect();
    (params, grads)
}

fn max_norm_for(clip: Clip) -> f32 {
    // The gradients have a norm near 0.1·sqrt(101011) ≈ 32 every step.
    match clip {
        Clip::Bites => 1.0,
        Clip::DoesNotBite => 1000.0,
        Clip::Off => 0.0,
    }
}

/// Record gradnorm + adamw for every tensor once, then replay it STEPS times with new
/// gradients and step values, asserting one submit per replay.
fn run_gpu(ctx: &GpuContext, init: &[Vec<f32>], grads: &[Vec<Vec<f32>>], clip: Clip) -> Outcome {
    let tensor =
        |name: String, data: &[f32]| Tensor::from_f32(ctx, &name, &[data.len()], data).unwrap();
    let zeros = vec![0f32; init.iter().map(Vec::len).max().unwrap()];
    let params: Vec<Tensor> = init
        .iter()
        .enumerate()
        .map(|(i, p)| tensor(format!("param{i}"), p))
        .collect();
    let ms: Vec<Tensor> = init
        .iter()
        .enumerate()
        .map(|(i, p)| tensor(format!("m{i}"), &zeros[..p.len()]))
        .collect();
    let vs: Vec<Tensor> = init
        .iter()
        .enumerate()
        .map(|(i, p)| tensor(format!("v{i}"), &zeros[..p.len()]))
        .collect();
    let gs: Vec<Tensor> = init
        .iter()
        .enumerate()
        .map(|(i, p)| tensor(format!("grad{i}"), &zeros[..p.len()]))
        .collect();
    let grad_refs: Vec<&Tensor> = gs.iter().collect();
    let step = AdamwStep::tensor(ctx, "adamw step").unwrap();

    // The "clip then update" of a training step, recorded once.
    let gn = GradNorm::new(ctx, &grad_refs).unwrap();
    let mut s = Schedule::new("optimizer step");
    gn.record(&mut s, ctx, &grad_refs, max_norm_for(clip))
        .unwrap();
    for (i, &(n, wd)) in TENSORS.iter().enumerate() {
        adamw_update(
            &mut s, ctx, &params[i], &ms[i], &vs[i], &gs[i], &step, &gn.state, n, wd,
        )
        .unwrap();
    }

    let mut norms = Vec::new();
    for t in 1..=STEPS {
        for (g, data) in gs.iter().zip(&grads[t as usize - 1]) {
            g.write(ctx, data).unwrap();
        }
        AdamwStep::new(lr_at(t), BETAS.0, BETAS.1, EPS, t)
            .unwrap()
            .write(ctx, &step)
            .unwrap();
        let before = ctx.submit_count();
        s.run(ctx);
        assert_eq!(ctx.submit_count() - before, 1, "a step must be one submit");
        let st = ctx.block_on(gn.read(ctx)).unwrap();
        norms.push([st.norm, st.clip_scale]);
    }
    let read = |ts: &[Tensor]| -> Vec<Vec<f32>> {
        ts.iter()
            .map(|t| ctx.block_on(t.read_f32(ctx)).unwrap())
            .collect()
    };
    Outcome {
        params: read(&params),
        m: read(&ms),
        v: read(&vs),
        norms,
    }
}

type State64 = Vec<Vec<f64>>;

/// The same STEPS steps in f64: (params, m, v, [norm, clip_scale] per step).
fn run_reference(
    init: &[Vec<f32>],
    grads: &[Vec<Vec<f32>>],
    clip: Clip,
) -> (State64, State64, State64, Vec<[f64; 2]>) {
    let mut params: State64 = init.iter().map(|p| to_f64(p)).collect();
    let mut m: State64 = init.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut v = m.clone();
    let mut norms = Vec::new();
    for t in 1..=STEPS {
        let g64: State64 = grads[t as usize - 1].iter().map(|g| to_f64(g)).collect();
        let g_refs: Vec<&[f64]> = g64.iter().map(|g| g.as_slice()).collect();
        let mut norm_state = vec![0f64; cpu_norm::NORM_STATE_LEN];
        cpu_norm::gradnorm(&mut norm_state, &g_refs, max_norm_for(clip) as f64);
        norms.push([norm_state[0], norm_state[1]]);
        let step = AdamwStep::new(lr_at(t), BETAS.0, BETAS.1, EPS, t).unwrap();
        for (i, &(n, wd)) in TENSORS.iter().enumerate() {
            cpu::adamw_update(
                &mut params[i],
                &mut m[i],
                &mut v[i],
                &g64[i],
                &step,
                &norm_state,
                n,
                wd as f64,
            );
        }
    }
    (params, m, v, norms)
}

fn check_against_reference(ctx: &GpuContext, clip: Clip, what: &str) {
    let (init, grads) = data(31);
    let got = run_gpu(ctx, &init, &grads, clip);
    let (params, m, v, norms) = run_reference(&init, &grads, clip);
    for (t, (g, w)) in got.norms.iter().zip(&norms).enumerate() {
        let name = format!("{what} {clip:?} step {} [norm, clip_scale]", t + 1);
        assert_close64(&name, g, w, 1e-4, 1e-3);
        match clip {
            Clip::Bites => assert!(g[1] < 0.1, "{name}: clipping should bite: {g:?}"),
            _ => assert_eq!(g[1], 1.0, "{name}: clipping should not bite"),
        }
    }
    let mut worst = 0f32;
    for (i, &(n, wd)) in TENSORS.iter().enumerate() {
        let name = |x: &str| format!("{what} {clip:?} {x}{i} (n={n}, wd={wd}) after {STEPS} steps");
        let c = assert_close64(&name("param"), &got.params[i], &params[i], 1e-5, 1e-4);
        worst = worst.max(c.max_abs);
        assert_close64(&name("m"), &got.m[i], &m[i], 1e-5, 1e-4);
        assert_close64(&name("v"), &got.v[i], &v[i], 1e-5, 1e-4);
    }
    eprintln!("{what} {clip:?}: max |Δ param| after {STEPS} steps {worst:e}");
    // The update moved every parameter (no step was a no-op).
    for (p, p0) in got.params.iter().zip(&init) {
        assert!(
            p.iter().zip(p0).all(|(a, b)| a != b),
            "a parameter did not move"
        );
    }
}

#[test]
fn adamw_matches_reference_over_replayed_steps() {
    on_each_adapter(|ctx| {
        for clip in [Clip::Bites, Clip::DoesNotBite, Clip::Off] {
            check_against_reference(ctx, clip, "adamw");
        }
    });
}

#[test]
fn adamw_of_tensors_larger_than_one_binding_matches_reference() {
    // 64 KiB bindings: the 100,003-element tensors are updated in 7 chunks.
    on_each_small_binding_adapter(64 << 10, |ctx| {
        assert!(ctx.row_chunks(100_003, 1).len() > 1, "no chunking happened");
        check_against_reference(ctx, Clip::Bites, "adamw chunked");
    });
}

#[test]
fn adamw_is_deterministic() {
    on_each_adapter(|ctx| {
        let (init, grads) = data(8);
        let a = run_gpu(ctx, &init, &grads, Clip::Bites);
        let b = run_gpu(ctx, &init, &grads, Clip::Bites);
        for i in 0..TENSORS.len() {
            assert!(
                same_bits(&a.params[i], &b.params[i]),
                "param{i} bits differ"
            );
            assert!(same_bits(&a.m[i], &b.m[i]), "m{i} bits differ");
            assert!(same_bits(&a.v[i], &b.v[i]), "v{i} bits differ");
        }
        let flat = |o: &Outcome| o.norms.iter().flatten().copied().collect::<Vec<f32>>();
        assert!(same_bits(&flat(&a), &flat(&b)), "norm bits differ");
    });
}

#[test]
fn adamw_errors_name_the_tensor() {
    assert!(AdamwStep::new(1e-3, 0.9, 0.999, 1e-8, 0).is_err());
    assert!(AdamwStep::new(1e-3, 1.0, 0.999, 1e-8, 1).is_err());
    on_each_adapter(|ctx| {
        let t = |name: &str, n: usize| Tensor::from_f32(ctx, name, &[n], &vec![0.0; n]).unwrap();
        let (p, m, v, g) = (
            t("wte", 10),
            t("wte.m", 10),
            t("wte.v", 9),
            t("wte.grad", 10),
        );
        let step = AdamwStep::tensor(ctx, "step").unwrap();
        let gn = GradNorm::new(ctx, &[&g]).unwrap();
        let mut s = Schedule::new("adamw errors");
        let e = adamw_update(&mut s, ctx, &p, &m, &v, &g, &step, &gn.state, 10, 0.1).unwrap_err();
        assert!(e.to_string().contains("wte.v"), "{e}");
        // A 10-element tensor passed as the 8-word step buffer.
        let e = adamw_update(&mut s, ctx, &p, &m, &m, &g, &g, &gn.state, 10, 0.1).unwrap_err();
        assert!(e.to_string().contains("wte.grad"), "{e}");
    });
}

#[test]
fn adamw_reference_first_step_is_sign_descent() {
    // At t = 1 the bias-corrected update is lr·g/(|g| + eps) ≈ lr·sign(g).
    let step = AdamwStep::new(0.1, 0.9, 0.999, 1e-8, 1).unwrap();
    let (mut p, mut m, mut v) = (vec![1.0, 1.0], vec![0.0; 2], vec![0.0; 2]);
    cpu::adamw_update(
        &mut p,
        &mut m,
        &mut v,
        &[2.0, -3.0],
        &step,
        &[0.0, 1.0],
        2,
        0.5,
    );
    let decayed = 1.0 - 0.1f32 as f64 * 0.5;
    assert!((p[0] - (decayed - 0.1f32 as f64)).abs() < 1e-7, "{p:?}");
    assert!((p[1] - (decayed + 0.1f32 as f64)).abs() < 1e-7, "{p:?}");
}
