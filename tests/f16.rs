//! The f16 and mixed paths: `cast_f32_to_f16` against its CPU reference (round to
//! nearest, overflow to infinity); every matmul kernel family and form with `w` stored
//! in f16, and with `a` and `w` in f16, against the f64 reference of the same product
//! with the operands rounded to f16, including w (GPT-2's wte shape) bound in row
//! chunks; both GPT-2 paths against transformers; the loss scaler's kernels against
//! their reference, a skipped overflowing step, and what the scale preserves. Runs on
//! every adapter with `shader-f16`; adapters without it must refuse f16 with an error
//! naming the feature. At least one adapter must have it (lavapipe does): the f16 paths
//! are never left untested.

use std::path::{Path, PathBuf};

use wgformer::gpu::{DType, GpuContext, GpuOptions, Needs, Schedule, Tensor};
use wgformer::infer::decoder::generate_greedy_cached;
use wgformer::kernels::cast::cast_f32_to_f16;
use wgformer::kernels::classifier::ClassifierChunk;
use wgformer::kernels::decode::decode_logits;
use wgformer::kernels::matmul::{matmul_forward, Gemm};
use wgformer::model::gpt2::{record_forward, Activations, Gpt2, OptimConfig, Trainer};
use wgformer::model::half::Precision;
use wgformer::model::params::gpt2_param_specs;
use wgformer::parity::parity_gpt2_in;
use wgformer::reference::{
    cast as cpu_cast, decode as cpu_decode, gelu as cpu_gelu, matmul as cpu,
};
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_report, on_each_matmul_kernel, reopen, stored, test_contexts, to_f64,
};

/// The test contexts whose device has `shader-f16`. Checks that the others refuse f16
/// with a clear error, and fails if no adapter has it.
fn f16_contexts() -> Vec<GpuContext> {
    let mut with = Vec::new();
    for ctx in test_contexts(&Needs::default()) {
        if ctx.has_f16() {
            with.push(ctx);
            continue;
        }
        eprintln!(
            "[wgformer test] {}: no shader-f16; checking that f16 is refused",
            ctx.adapter_name()
        );
        let a = Tensor::from_f32(&ctx, "a", &[2, 2], &[1.0; 4]).unwrap();
        let w = Tensor::from_f32_as_f16(&ctx, "w16", &[2, 2], &[1.0; 4]).unwrap();
        let out = Tensor::zeros(&ctx, "out", &[2, 2], DType::F32).unwrap();
        let mut s = Schedule::new("f16 refused");
        let err = matmul_forward(&mut s, &ctx, &out, &a, &w, None, 2, 2, 2)
            .expect_err("an f16 matmul on a device without shader-f16")
            .to_string();
        assert!(err.contains("shader-f16"), "unclear error: {err}");
    }
    assert!(
        !with.is_empty(),
        "no adapter with shader-f16 among those tested, so the f16 path would go untested; \
         install Mesa's lavapipe (apt-get install -y mesa-vulkan-drivers), which has it, \
         and run with WGFORMER_TEST_ADAPTERS=all"
    );
    with
}

fn rounded(x: &[f32]) -> Vec<f64> {
    let mut r = vec![0f64; x.len()];
    cpu_cast::cast_f32_to_f16(&mut r, &to_f64(x), x.len());
    r
}

#[test]
fn cast_f32_to_f16_matches_reference() {
    let mut rng = Rng::new(5);
    for ctx in f16_contexts() {
        // Odd N (the last word half padding), and N over three binding chunks.
        for n in [1usize, 7, 1000, 300_001] {
            let mut x = rng.vec_normal(n, 3.0);
            let specials = [
                0.0, -0.0, 65504.0, -65504.0, 70000.0, -1e6, 1e-7, 6e-8, 1e-9,
            ];
            for (xi, &v) in x.iter_mut().zip(&specials) {
                *xi = v;
            }
            let ctx = if n > 100_000 {
                // 256 KiB a binding: inp (1.2 MB) in five chunks, out in three.
                reopen(&ctx).with_binding_limit(256 << 10)
            } else {
                reopen(&ctx)
            };
            let inp = Tensor::from_f32(&ctx, "x", &[n], &x).unwrap();
            let out = Tensor::zeros(&ctx, "x16", &[n], DType::F16).unwrap();
            let mut s = Schedule::new("cast");
            cast_f32_to_f16(&mut s, &ctx, &out, &inp, n).unwrap();
            s.run(&ctx);
            let got = ctx.block_on(out.read_f32(&ctx)).unwrap();
            let want = rounded(&x);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                // WGSL leaves the rounding of an inexact conversion to the device between
                // the two neighbours; lavapipe rounds to nearest like the reference.
                let ok = g as f64 == w
                    || (g.is_infinite() && w.is_infinite() && g.signum() as f64 == w.signum());
                assert!(
                    ok,
                    "{}: x[{i}] = {} → {g}, expected {w}",
                    ctx.adapter_name(),
                    x[i]
                );
            }
        }
        // Wrong dtypes are refused by name.
        let a = Tensor::from_f32(&ctx, "a32", &[4], &[1.0; 4]).unwrap();
        let b = Tensor::from_f32(&ctx, "b32", &[4], &[1.0; 4]).unwrap();
        let err = cast_f32_to_f16(&mut Schedule::new("bad"), &ctx, &a, &b, 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a32") && err.contains("f16"), "{err}");
    }
}

/// out (+)= op(a) · op(w16) (+ bias) in every form, against the reference with w rounded;
/// with `half_a`, a stored in f16 too (the mixed path) and rounded in the reference.
fn check_forms(ctx: &GpuContext, rng: &mut Rng, (m, k, n): (usize, usize, usize), half_a: bool) {
    let a = rng.vec_uniform(m * k, -1.0, 1.0); // (M, K)
    let w = rng.vec_normal(k * n, 0.5); // (K, N)
    let bias = rng.vec_uniform(n, -0.5, 0.5);
    let prior = rng.vec_uniform(m * n, -1.0, 1.0);
    let w16 = rounded(&w);
    let a_ref = if half_a { rounded(&a) } else { to_f64(&a) };
    for (trans_a, trans_b, accumulate, with_bias, a_gelu) in [
        (false, false, false, true, false),
        (false, true, false, false, false),
        (false, true, true, false, false),
        (true, false, true, false, false),
        (false, false, true, false, false),
        (false, false, false, true, true),
        (true, false, true, false, true),
    ] {
        let a_stored = stored(&a, m, k, trans_a);
        let w_stored = stored(&w, k, n, trans_b);
        let ta = if half_a {
            Tensor::from_f32_as_f16(ctx, "a16", &[a.len()], &a_stored).unwrap()
        } else {
            Tensor::from_f32(ctx, "a", &[a.len()], &a_stored).unwrap()
        };
        let tw = Tensor::from_f32_as_f16(ctx, "w16", &[w.len()], &w_stored).unwrap();
        let tb = Tensor::from_f32(ctx, "bias", &[n], &bias).unwrap();
        let to = Tensor::from_f32(ctx, "out", &[m, n], &prior).unwrap();
        let gemm = Gemm {
            trans_a,
            trans_b,
            accumulate,
            a_gelu,
        };
        let mut s = Schedule::new("gemm f16");
        let b = with_bias.then_some(&tb);
        gemm.record(&mut s, ctx, &to, &ta, &tw, b, m, k, n).unwrap();
        s.run(ctx);
        let got = ctx.block_on(to.read_f32(ctx)).unwrap();
        let mut op_a = a_ref.clone();
        if a_gelu {
            cpu_gelu::gelu_forward(&mut op_a, &a_ref, m * k);
        }
        let mut want = vec![0f64; m * n];
        let b64 = to_f64(&bias);
        cpu::matmul_forward(
            &mut want,
            &op_a,
            &w16,
            with_bias.then_some(b64.as_slice()),
            m,
            k,
            n,
        );
        if accumulate {
            for (x, &p) in want.iter_mut().zip(&prior) {
                *x += p as f64;
            }
        }
        let name = format!(
            "{} {:?} f16 w, f16 a {half_a}, {gemm:?} bias {with_bias} {m}x{k}x{n}",
            ctx.adapter_name(),
            ctx.matmul_kernel()
        );
        assert_close64(&name, &got, &want, 1e-4, 1e-3);
    }
}

/// Every matmul family with w in f16 (`half_a` false), or a and w in f16: the tiled and
/// gemv kernels (GPUs), rows and gemv_cols (CPU adapters), subgroup (CPU adapters with
/// subgroups), with tails in every dimension and M ≤ 4 (decoding), each form with and
/// without the GELU on a.
fn check_f16_matmuls(half_a: bool) {
    for ctx in f16_contexts() {
        on_each_matmul_kernel(&ctx, |ctx| {
            let mut rng = Rng::new(77);
            for size in [
                (1, 13, 5),
                (3, 96, 68),
                (17, 64, 48),
                (65, 132, 68),
                (40, 48, 101),
            ] {
                check_forms(ctx, &mut rng, size, half_a);
            }
        });
    }
}

// Two tests (their kernels differ in a's type), so that the test threads share the compiles.
#[test]
fn matmul_with_f16_weights_matches_reference() {
    check_f16_matmuls(false);
}

#[test]
fn matmul_with_f16_activations_and_weights_matches_reference() {
    check_f16_matmuls(true);
}

/// The tied classifier's shape with wte in f16 split into row chunks (logits = x · wteᵀ),
/// prefill and decode, on the adapter's own matmul family.
#[test]
fn classifier_with_f16_wte_in_row_chunks_matches_reference() {
    let mut rng = Rng::new(9);
    let (c, v) = (96, 1000);
    for ctx in f16_contexts() {
        // 64 KiB a binding: wte16 (V, C) = 188 KiB in 3+ chunks (logits in 2+).
        let ctx = reopen(&ctx).with_binding_limit(64 << 10);
        assert!(ctx.row_chunks_of(DType::F16, v, c).len() >= 3);
        for m in [2usize, 37] {
            let x = rng.vec_uniform(m * c, -1.0, 1.0);
            let wte = rng.vec_normal(v * c, 0.3);
            let tx = Tensor::from_f32(&ctx, "x", &[m, c], &x).unwrap();
            let tw = Tensor::from_f32_as_f16(&ctx, "wte16", &[v, c], &wte).unwrap();
            let to = Tensor::zeros(&ctx, "logits", &[m, v], DType::F32).unwrap();
            let mut s = Schedule::new("classifier f16");
            wgformer::kernels::matmul::classifier_forward(&mut s, &ctx, &to, &tx, &tw, m, c, v)
                .unwrap();
            s.run(&ctx);
            let got = ctx.block_on(to.read_f32(&ctx)).unwrap();
            let mut want = vec![0f64; m * v];
            cpu::classifier_forward(&mut want, &to_f64(&x), &rounded(&wte), m, c, v);
            // The kernel must have read the rounded weights, not f32 ones: against the
            // unrounded product it is off by far more than against the rounded one.
            let mut exact = vec![0f64; m * v];
            cpu::classifier_forward(&mut exact, &to_f64(&x), &to_f64(&wte), m, c, v);
            let err = |r: &[f64]| {
                got.iter()
                    .zip(r)
                    .map(|(&g, &r)| (g as f64 - r).abs())
                    .fold(0f64, f64::max)
            };
            assert!(
                err(&exact) > 10.0 * err(&want),
                "f16 rounding not visible: {:e} vs {:e}",
                err(&exact),
                err(&want)
            );
            assert_close64(
                &format!("{} classifier f16 M={m}", ctx.adapter_name()),
                &got,
                &want,
                1e-4,
                1e-3,
            );
        }
    }
}

#[test]
fn f16_is_refused_where_only_f32_is_read() {
    for ctx in f16_contexts() {
        let a16 = Tensor::from_f32_as_f16(&ctx, "a16", &[2, 2], &[1.0; 4]).unwrap();
        let w = Tensor::from_f32(&ctx, "w", &[2, 2], &[1.0; 4]).unwrap();
        let out = Tensor::zeros(&ctx, "out", &[2, 2], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        let err = matmul_forward(&mut s, &ctx, &out, &a16, &w, None, 2, 2, 2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a16") && err.contains("f16 a needs f16 w"),
            "{err}"
        );
    }
    // Needs::shader_f16 on an adapter without it is an error naming the feature.
    let opts = GpuOptions::from_env().unwrap();
    for ctx in test_contexts(&Needs::default()) {
        if ctx.has_f16() {
            continue;
        }
        let needs = Needs {
            shader_f16: true,
            ..Needs::default()
        };
        let err = match pollster::block_on(GpuContext::from_adapter(
            ctx.adapter.clone(),
            &opts,
            &needs,
        )) {
            Ok(_) => panic!("opened {} with shader-f16", ctx.adapter_name()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("shader-f16"), "{err}");
    }
}

/// decode_logits (a decode step's tied classifier) with wte in f16, bound in row chunks.
#[test]
fn decode_logits_with_f16_wte_matches_reference() {
    let mut rng = Rng::new(13);
    let (b, c, v) = (3, 96, 1000);
    for ctx in f16_contexts() {
        let ctx = reopen(&ctx).with_binding_limit(64 << 10);
        let x = rng.vec_uniform(b * c, -1.0, 1.0);
        let wte = rng.vec_normal(v * c, 0.3);
        let tx = Tensor::from_f32(&ctx, "x", &[b, c], &x).unwrap();
        let tw = Tensor::from_f32_as_f16(&ctx, "wte16", &[v, c], &wte).unwrap();
        let to = Tensor::zeros(&ctx, "logits", &[b, v], DType::F32).unwrap();
        let mut s = Schedule::new("decode_logits f16");
        decode_logits(&mut s, &ctx, &to, &tx, &tw, b, c, v).unwrap();
        s.run(&ctx);
        let got = ctx.block_on(to.read_f32(&ctx)).unwrap();
        let mut want = vec![0f64; b * v];
        cpu_decode::decode_logits(&mut want, &to_f64(&x), &rounded(&wte), b, c, v);
        assert_close64(
            &format!("{} decode_logits f16", ctx.adapter_name()),
            &got,
            &want,
            1e-4,
            1e-3,
        );
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

/// The gpt2-tiny fixture's model in `precision`.
fn fixture_model(ctx: &GpuContext, precision: Precision) -> Gpt2 {
    Gpt2::load(ctx, &fixture())
        .unwrap()
        .with_precision(ctx, precision)
        .unwrap()
}

/// The gpt2-tiny fixture through the f16 path against transformers: logits, loss, all
/// 28 gradients, 10 AdamW steps and greedy decoding through the KV cache, with 8x f32's
/// tolerances (greedy decoding identical).
#[test]
fn f16_parity_with_transformers_on_gpt2_tiny() {
    for ctx in f16_contexts() {
        assert_parity(&ctx, Precision::F16);
    }
}

/// The fixture's parity report in `precision`, with whole and with chunked logits.
fn assert_parity(ctx: &GpuContext, precision: Precision) {
    for chunk in [ClassifierChunk::Whole, ClassifierChunk::Columns(32)] {
        let report = ctx
            .block_on(parity_gpt2_in(ctx, &fixture(), chunk, precision))
            .unwrap();
        let label = format!("{} {precision} {chunk:?}", ctx.adapter_name());
        assert_report(&label, &report);
    }
}

/// Logits (B·T, V) of a full forward pass over `x`.
fn logits(ctx: &GpuContext, model: &Gpt2, x: &[i32], b: usize, t: usize) -> Vec<f32> {
    let acts = Activations::new(ctx, &model.config, b, t, "full.").unwrap();
    let mut s = Schedule::new("full forward");
    record_forward(&mut s, ctx, model, &acts).unwrap();
    acts.write_batch(ctx, model.config.vocab_size, x, None)
        .unwrap();
    s.run(ctx);
    ctx.block_on(acts.logits.read_f32(ctx)).unwrap()
}

fn is_matmul_weight(name: &str) -> bool {
    [
        "wte.weight",
        "c_attn.weight",
        "c_proj.weight",
        "c_fc.weight",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// With weights that f16 holds exactly, the f16 path computes what f32 does, to the
/// bit, in the forward pass and through the KV cache; and it reads the copies: zeroing
/// the master matrices changes nothing until the copies are refreshed.
#[test]
fn f16_path_reads_its_copies_and_matches_f32_on_f16_exact_weights() {
    for ctx in f16_contexts() {
        let base = Gpt2::load(&ctx, &fixture()).unwrap();
        let cfg = base.config.clone();
        let specs = gpt2_param_specs(&cfg);
        let mut values = ctx.block_on(base.params.read_all(&ctx)).unwrap();
        for (spec, v) in specs.iter().zip(values.iter_mut()) {
            if is_matmul_weight(&spec.name) {
                for x in v.iter_mut() {
                    *x = half::f16::from_f32(*x).to_f32();
                }
            }
        }
        let m32 = Gpt2::from_values(&ctx, cfg.clone(), &values).unwrap();
        let m16 = Gpt2::from_values(&ctx, cfg.clone(), &values)
            .unwrap()
            .with_precision(&ctx, Precision::F16)
            .unwrap();
        assert_eq!(m16.precision(), Precision::F16);
        let (b, t) = (2, 17);
        let mut rng = Rng::new(3);
        let x: Vec<i32> = (0..b * t)
            .map(|_| rng.below(cfg.vocab_size as u64) as i32)
            .collect();
        let want = logits(&ctx, &m32, &x, b, t);
        let got = logits(&ctx, &m16, &x, b, t);
        assert_close64(
            &format!("{} f16 path on f16-exact weights", ctx.adapter_name()),
            &got,
            &to_f64(&want),
            1e-6,
            1e-6,
        );
        let prompt: Vec<i32> = x[..5].to_vec();
        let g32 = ctx.block_on(generate_greedy_cached(&ctx, &m32, &prompt, 30));
        let g16 = ctx.block_on(generate_greedy_cached(&ctx, &m16, &prompt, 30));
        assert_eq!(g16.unwrap(), g32.unwrap(), "greedy through the KV cache");

        // Zero the block matrices of the master weights (wte stays: the embedding reads
        // it): the copies still hold the old ones, so the logits do not move...
        let mut zeroed = values.clone();
        for (spec, v) in specs.iter().zip(zeroed.iter_mut()) {
            if is_matmul_weight(&spec.name) && spec.name != "wte.weight" {
                v.iter_mut().for_each(|x| *x = 0.0);
            }
        }
        m16.params.write_all(&ctx, &zeroed).unwrap();
        let stale = logits(&ctx, &m16, &x, b, t);
        assert!(stale == got, "the f16 path read the f32 master weights");
        // ...until they are refreshed.
        m16.refresh_half(&ctx).unwrap();
        let fresh = logits(&ctx, &m16, &x, b, t);
        assert!(fresh != got, "refresh_half did not update the copies");
    }
}

/// A training step refreshes the f16 copies from the updated master weights, in the
/// step's own submit: after steps, every copy is its master rounded to f16.
#[test]
fn f16_training_steps_keep_the_copies_in_step() {
    for ctx in f16_contexts() {
        let model = fixture_model(&ctx, Precision::F16);
        let cfg = model.config.clone();
        let (b, t) = (2, 16);
        let mut trainer = Trainer::new(&ctx, model, b, t, OptimConfig::default()).unwrap();
        let (x, y) = batch(&mut Rng::new(8), cfg.vocab_size, b * t);
        let submits = ctx.submit_count();
        let mut losses = Vec::new();
        for _ in 0..3 {
            losses.push(ctx.block_on(trainer.step(&ctx, &x, &y, 1e-2)).unwrap());
        }
        assert!(
            losses[2] < losses[0],
            "f16 training did not learn: {losses:?}"
        );
        assert_eq!(ctx.submit_count() - submits, 3, "one submit per step");
        let (half, _) = trainer.model.half.as_ref().unwrap();
        let master = &trainer.model.params;
        let mut pairs = vec![(&half.wte, &master.wte)];
        for (h, m) in half.layers.iter().zip(&master.layers) {
            pairs.push((&h.c_attn_w, &m.c_attn_w));
            pairs.push((&h.mlp_proj_w, &m.mlp_proj_w));
        }
        for (h, m) in pairs {
            let copy = ctx.block_on(h.read_f32(&ctx)).unwrap();
            let want = rounded(&ctx.block_on(m.read_f32(&ctx)).unwrap());
            assert!(
                copy.iter().zip(&want).all(|(&c, &w)| c as f64 == w),
                "{} is not {} rounded after 3 steps",
                h.label,
                m.label
            );
        }
    }
}

/// `wgformer train --precision f16`: the loss falls, the run's settings record the
/// precision, and a run stopped and resumed gives the same losses, bit for bit, as one
/// that never stopped (the resumed f32 masters are cast to fresh copies).
#[test]
fn train_in_f16_learns_and_resumes_bit_exact() {
    use wgformer::train::data::TINY_SHAKESPEARE;
    use wgformer::train::metrics::{Metrics, Record};
    use wgformer::train::{train, Silent};
    for (ctx, precision) in f16_contexts()
        .into_iter()
        .flat_map(|c| [(reopen(&c), Precision::F16), (c, Precision::Mixed)])
    {
        let p_name = precision.to_string();
        let dir =
            std::env::temp_dir().join(format!("wgformer-{p_name}-train-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let end = TINY_SHAKESPEARE[..20_000].rfind('\n').unwrap() + 1;
        let data = dir.join("shakespeare.txt");
        std::fs::write(&data, &TINY_SHAKESPEARE[..end]).unwrap();
        let run = |flags: &[&str], stop_at: Option<u64>| {
            let plan = wgformer::cli::train::parse(flags).unwrap().plan().unwrap();
            ctx.block_on(train(&ctx, plan, stop_at, &mut Silent))
                .unwrap()
        };
        let flags = |out: &Path| -> Vec<String> {
            #[rustfmt::skip]
            let f = [
                "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(),
                "--steps", "8", "--warmup-steps", "2", "--lr", "1e-2", "--eval-every", "4",
                "--eval-batches", "2", "--batch-size", "4", "--n-layer", "1", "--n-head", "2",
                "--n-embd", "32", "--block-size", "32", "--sample-tokens", "0",
                "--precision", &p_name,
            ];
            f.iter().map(|s| s.to_string()).collect()
        };
        let losses = |out: &Path| -> Vec<f32> {
            Metrics::read(&out.join("metrics.jsonl"))
                .unwrap()
                .into_iter()
                .filter_map(|r| match r {
                    Record::Train { loss, .. } => Some(loss),
                    _ => None,
                })
                .collect()
        };
        let straight = dir.join("straight");
        let a = flags(&straight);
        let full = run(&a.iter().map(String::as_str).collect::<Vec<_>>(), None);
        assert_eq!(full.model.precision(), precision);
        let la = losses(&straight);
        assert_eq!(la.len(), 8);
        assert!(
            la[7] < la[0] - 0.5,
            "{p_name} training did not learn: {la:?}"
        );
        let settings = std::fs::read_to_string(straight.join("run.json")).unwrap();
        assert!(
            settings.contains(&format!("\"precision\": \"{p_name}\"")),
            "{settings}"
        );
        // The mixed path's checkpoint keeps its loss scaler.
        let state = std::fs::read_to_string(straight.join("checkpoint/trainer.json")).unwrap();
        assert_eq!(
            state.contains("loss_scale"),
            precision == Precision::Mixed,
            "{state}"
        );

        let stopped = dir.join("stopped");
        let b = flags(&stopped);
        drop(run(
            &b.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(3),
        ));
        let out = stopped.to_str().unwrap();
        let resumed = run(&["--resume", "--out", out, "--sample-tokens", "0"], None);
        assert_eq!(resumed.model.precision(), precision);
        let lb = losses(&stopped);
        assert!(
            la.iter().zip(&lb).all(|(x, y)| x.to_bits() == y.to_bits()) && la.len() == lb.len(),
            "resumed {p_name} losses differ:\n{la:?}\n{lb:?}"
        );
        let scaler = |run: &Path| {
            let text = std::fs::read_to_string(run.join("checkpoint/trainer.json")).unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["loss_scale"].clone()
        };
        assert_eq!(scaler(&straight), scaler(&stopped));
    }
}

/// The gpt2-tiny fixture through the mixed path (every block matmul reading f16
/// activations, gradients and weights, with loss scaling) against transformers: logits,
/// loss, all 28 gradients (unscaled), 10 AdamW steps and greedy decoding, with 16x f32's
/// tolerances; its matmuls ran on f16 copies of the activations and gradients.
#[test]
fn mixed_parity_with_transformers_on_gpt2_tiny() {
    for ctx in f16_contexts() {
        assert_parity(&ctx, Precision::Mixed);
        // The step's matmuls read the f16 copies: forward and backward, every block.
        let model = fixture_model(&ctx, Precision::Mixed);
        let n_layer = model.config.n_layer;
        let trainer = Trainer::new(&ctx, model, 2, 8, OptimConfig::default()).unwrap();
        let mut s = Schedule::new("mixed forward+backward");
        record_forward(&mut s, &ctx, &trainer.model, &trainer.acts).unwrap();
        wgformer::model::gpt2::record_loss(&mut s, &ctx, &trainer.model.config, &trainer.acts)
            .unwrap();
        wgformer::model::gpt2::record_backward(
            &mut s,
            &ctx,
            &trainer.model,
            &trainer.grads,
            &trainer.acts,
            &trainer.dacts,
        )
        .unwrap();
        let labels = s.launch_labels();
        for l in 0..n_layer {
            for name in [
                format!("<- act.h.{l}.ln1 (f16)"),
                format!("<- act.h.{l}.atty (f16)"),
                format!("<- act.h.{l}.ln2 (f16)"),
                format!("<- gelu(act.h.{l}.fch (f16))"),
            ] {
                assert!(
                    labels.iter().any(|x| x.contains(&name)),
                    "no matmul reads {name}: {labels:#?}"
                );
            }
        }
        // The gradients' f16 copies are one set that every block reuses: each block's
        // backward reads each of them as often as the others do.
        for name in ["qkv", "attproj", "fch", "fcproj"] {
            let name = format!("<- grad.block.{name} (f16)");
            let n = labels.iter().filter(|x| x.contains(&name)).count();
            assert!(
                n > 0 && n % n_layer == 0,
                "{n} matmuls read {name}, not a multiple of {n_layer} blocks: {labels:#?}"
            );
        }
    }
}

/// The scaler's kernels against the reference through a sequence of finite and
/// overflowing steps: unscaled norm and clip scale, skip flag, halving, growth after
/// the interval, and the bounds.
#[test]
fn loss_scale_kernels_match_reference() {
    use wgformer::kernels::lossscale::{loss_scale_apply, loss_scale_update, LossScaleConfig};
    use wgformer::reference::lossscale as cpu_ls;
    let config = LossScaleConfig {
        init_scale: 4.0,
        growth_interval: 2,
        max_scale: 16.0,
        min_scale: 1.0,
    };
    for ctx in wgformer::testing::test_contexts(&Needs::default()) {
        let norm = Tensor::zeros(&ctx, "norm state", &[5], DType::F32).unwrap();
        let scaler = Tensor::from_f32(&ctx, "scaler", &[4], &[4.0, 0.0, 0.0, 0.0]).unwrap();
        let mut want_scaler = vec![4.0f64, 0.0, 0.0, 0.0];
        // Σ g² of each step (inf and NaN: an overflow), with clipping at 1 or off.
        let steps = [
            (100.0f32, 1.0f32),
            (f32::INFINITY, 1.0),
            (1e-4, 1.0),
            (9.0, 0.0),
            (f32::NAN, 0.0),
            (f32::NAN, 0.0),
            (f32::NAN, 0.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
            (4.0, 1.0),
        ];
        for (i, &(sum_sq, max_norm)) in steps.iter().enumerate() {
            let state = [sum_sq.sqrt(), 1.0, sum_sq, max_norm, 0.0];
            norm.write(&ctx, &state).unwrap();
            let mut s = Schedule::new("loss scale update");
            loss_scale_update(&mut s, &ctx, &norm, &scaler, &config).unwrap();
            s.run(&ctx);
            let mut want_norm: Vec<f64> = state.iter().map(|&x| x as f64).collect();
            cpu_ls::loss_scale_update(&mut want_norm, &mut want_scaler, 2, 16.0, 1.0);
            let got_norm = ctx.block_on(norm.read_f32(&ctx)).unwrap();
            let got_scaler = ctx.block_on(scaler.read_f32(&ctx)).unwrap();
            let label = format!("{} step {i} (Σg² {sum_sq})", ctx.adapter_name());
            assert_close64(
                &format!("{label} scaler"),
                &got_scaler,
                &want_scaler,
                0.0,
                0.0,
            );
            // An overflowed step leaves inf or NaN in the words it does not rewrite.
            for (j, (&g, &w)) in got_norm.iter().zip(&want_norm).enumerate() {
                let same = (g.is_nan() && w.is_nan())
                    || g as f64 == w
                    || (g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs());
                assert!(same, "{label}: norm state word {j} is {g}, expected {w}");
            }
        }
        // The scale went down to its floor and back up to its cap.
        assert_eq!(want_scaler[0], 16.0);
        assert_eq!(want_scaler[3], 4.0, "skipped steps");
        let stats = Tensor::from_f32(&ctx, "stats", &[4], &[2.5, 8.0, 0.125, 20.0]).unwrap();
        let mut s = Schedule::new("loss scale apply");
        loss_scale_apply(&mut s, &ctx, &stats, &scaler).unwrap();
        s.run(&ctx);
        let got = ctx.block_on(stats.read_f32(&ctx)).unwrap();
        assert_eq!(got, [2.5, 8.0, 0.125 * 16.0, 20.0]);
        // A bad rule is refused by name.
        let bad = LossScaleConfig {
            growth_interval: 0,
            ..config
        };
        let err = loss_scale_update(&mut Schedule::new("bad"), &ctx, &norm, &scaler, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("growth interval"), "{err}");
    }
}

/// A random batch of `n` (token, next token) pairs.
fn batch(rng: &mut Rng, vocab: usize, n: usize) -> (Vec<i32>, Vec<i32>) {
    let x: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
    let y: Vec<i32> = x[1..].iter().chain(&x[..1]).copied().collect();
    (x, y)
}

/// A mixed-precision step whose scaled gradients overflow f16 changes no weight and no
/// moment, counts as skipped and halves the scale; the next finite steps train, and the
/// scale doubles after the growth interval. Each step is still one submit.
#[test]
fn an_overflowing_mixed_step_is_skipped_and_the_scale_backs_off() {
    use wgformer::kernels::lossscale::LossScaleConfig;
    use wgformer::model::gpt2::StepConfig;
    for ctx in f16_contexts() {
        let model = fixture_model(&ctx, Precision::Mixed);
        let vocab = model.config.vocab_size;
        let (b, t) = (2, 16);
        let config = StepConfig {
            loss_scale: LossScaleConfig {
                growth_interval: 2,
                ..LossScaleConfig::default()
            },
            ..StepConfig::default()
        };
        let mut trainer =
            Trainer::with_config(&ctx, model, b, t, OptimConfig::default(), config).unwrap();
        let (x, y) = batch(&mut Rng::new(3), vocab, b * t);
        sc_write(&trainer, &ctx, 1e30, 0);
        let read = |tr: &Trainer| {
            let mut all = ctx.block_on(tr.model.params.read_all(&ctx)).unwrap();
            all.extend(ctx.block_on(tr.m.read_all(&ctx)).unwrap());
            all.extend(ctx.block_on(tr.v.read_all(&ctx)).unwrap());
            all
        };
        let before = read(&trainer);
        let submits = ctx.submit_count();
        let loss0 = ctx.block_on(trainer.step(&ctx, &x, &y, 1e-2)).unwrap();
        assert_eq!(ctx.submit_count() - submits, 1, "one submit per step");
        assert!(loss0.is_finite(), "the loss itself is unscaled: {loss0}");
        let after = read(&trainer);
        assert!(
            before
                .iter()
                .flatten()
                .zip(after.iter().flatten())
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "an overflowed step changed weights or moments"
        );
        let st = ctx.block_on(trainer.loss_scale(&ctx)).unwrap().unwrap();
        assert_eq!(
            (st.scale, st.last_skipped, st.skipped, st.good_steps),
            (5e29, true, 1, 0),
            "{st:?}"
        );
        // From a sane scale: finite steps train, and the second doubles the scale.
        sc_write(&trainer, &ctx, 1024.0, st.skipped);
        let mut losses = vec![];
        for _ in 0..3 {
            losses.push(ctx.block_on(trainer.step(&ctx, &x, &y, 1e-2)).unwrap());
        }
        let st = ctx.block_on(trainer.loss_scale(&ctx)).unwrap().unwrap();
        assert_eq!(
            (st.scale, st.last_skipped, st.skipped, st.good_steps),
            (2048.0, false, 1, 1),
            "{st:?}"
        );
        assert!(
            losses[2] < losses[0],
            "mixed training did not learn: {losses:?}"
        );
        assert!(read(&trainer) != before);
    }
}

/// A skipped step is no AdamW step, as in torch, whose GradScaler skips
/// `optimizer.step()`: after one overflowed step, a step at a sane scale gives the same
/// bits as the first step of a trainer that never overflowed (t = 1 in both); with t = 2
/// the bias corrections would differ.
#[test]
fn a_skipped_step_does_not_advance_adamw_t() {
    for ctx in f16_contexts() {
        let (b, t) = (2, 16);
        let trainer = || {
            let model = fixture_model(&ctx, Precision::Mixed);
            Trainer::new(&ctx, model, b, t, OptimConfig::default()).unwrap()
        };
        let (mut skipping, mut fresh) = (trainer(), trainer());
        let vocab = fresh.model.config.vocab_size;
        let (x, y) = batch(&mut Rng::new(5), vocab, b * t);
        sc_write(&skipping, &ctx, 1e30, 0);
        ctx.block_on(skipping.step(&ctx, &x, &y, 1e-2)).unwrap();
        assert_eq!(
            (skipping.step, skipping.skipped, skipping.adamw_t()),
            (1, 1, 1),
            "the overflowed step must leave AdamW's t at 1"
        );
        sc_write(&skipping, &ctx, 1024.0, 1);
        sc_write(&fresh, &ctx, 1024.0, 0);
        let l_skipping = ctx.block_on(skipping.step(&ctx, &x, &y, 1e-2)).unwrap();
        let l_fresh = ctx.block_on(fresh.step(&ctx, &x, &y, 1e-2)).unwrap();
        assert_eq!(l_skipping.to_bits(), l_fresh.to_bits());
        assert_eq!((skipping.skipped, skipping.adamw_t()), (1, 2));
        let read = |tr: &Trainer| {
            let mut all = ctx.block_on(tr.model.params.read_all(&ctx)).unwrap();
            all.extend(ctx.block_on(tr.m.read_all(&ctx)).unwrap());
            all.extend(ctx.block_on(tr.v.read_all(&ctx)).unwrap());
            all
        };
        let (a, f) = (read(&skipping), read(&fresh));
        let differ = a
            .iter()
            .flatten()
            .zip(f.iter().flatten())
            .filter(|(a, f)| a.to_bits() != f.to_bits())
            .count();
        assert_eq!(
            differ, 0,
            "{differ} weights or moments differ from a trainer that never skipped"
        );
    }
}

fn sc_write(trainer: &Trainer, ctx: &GpuContext, scale: f32, skipped: u32) {
    let st = wgformer::kernels::lossscale::LossScaleState {
        scale,
        good_steps: 0,
        last_skipped: false,
        skipped,
    };
    trainer.scaler.as_ref().unwrap().write(ctx, &st).unwrap();
}

/// Why the scale exists: at GPT-2's init, with 512 positions a batch, many gradients at
/// the matmul inputs lie below f16's normal range (6.1e-5), where f16 keeps fewer than
/// its 11 significant bits or flushes them to 0. Unscaled (S = 1) a large share of the
/// f16 gradient copies the backward's matmuls read is rounded worse than f16's normal
/// bound of 2^-11; at the default S = 2^16 almost none is, and the unscaled gradients
/// stay close to f32's.
#[test]
fn loss_scaling_keeps_small_gradients() {
    use wgformer::model::Gpt2Config;
    for ctx in f16_contexts() {
        let cfg = Gpt2Config::new(512, 64, 64, 2, 4);
        let (b, t) = (8, 64);
        let (x, y) = batch(&mut Rng::new(4), cfg.vocab_size, b * t);
        // (the share of badly rounded f16 gradient copies, every parameter's gradient)
        let run = |precision: Precision, scale: Option<f32>| {
            let model = Gpt2::init(&ctx, cfg.clone(), 1)
                .unwrap()
                .with_precision(&ctx, precision)
                .unwrap();
            let trainer = Trainer::new(&ctx, model, b, t, OptimConfig::default()).unwrap();
            if let Some(s) = scale {
                sc_write(&trainer, &ctx, s, 0);
            }
            ctx.block_on(trainer.forward_backward(&ctx, &x, &y))
                .unwrap();
            let (mut bad, mut total) = (0usize, 0usize);
            let read = |t: &Tensor| ctx.block_on(t.read_f32(&ctx)).unwrap();
            // Block 0's gradients and their copies: the blocks share one set of each,
            // so block 0, the last backward, leaves its values there.
            if let Some(half) = &trainer.dacts.half {
                let full = trainer.dacts.layer(0);
                let pairs = [
                    (full.dqkv, &half.dqkv),
                    (full.dattproj, &half.dattproj),
                    (full.dfch, &half.dfch),
                    (full.dfcproj, &half.dfcproj),
                ];
                for (f, h) in pairs {
                    for (&g, &c) in read(f).iter().zip(&read(h)) {
                        if g != 0.0 {
                            total += 1;
                            let err = ((c - g) as f64 / g as f64).abs();
                            bad += (err > 2f64.powi(-11) * 1.0001) as usize;
                        }
                    }
                }
            }
            let share = bad as f64 / total.max(1) as f64;
            (share, ctx.block_on(trainer.gradients(&ctx)).unwrap())
        };
        let (_, reference) = run(Precision::F32, None);
        let rel_err = |g: &[Vec<f32>]| {
            let (mut num, mut den) = (0f64, 0f64);
            for (a, r) in g.iter().flatten().zip(reference.iter().flatten()) {
                num += ((a - r) as f64).powi(2);
                den += (*r as f64).powi(2);
            }
            (num / den).sqrt()
        };
        let (bad_unscaled, g_unscaled) = run(Precision::Mixed, Some(1.0));
        let (bad_scaled, g_scaled) = run(Precision::Mixed, None);
        let (err_unscaled, err_scaled) = (rel_err(&g_unscaled), rel_err(&g_scaled));
        eprintln!(
            "[wgformer test] {}: f16 gradient copies rounded past 2^-11: {:.2} % at S = 1, \
             {:.4} % at S = 2^16; gradients' relative error against f32: {err_unscaled:.3e}, \
             {err_scaled:.3e}",
            ctx.adapter_name(),
            100.0 * bad_unscaled,
            100.0 * bad_scaled
        );
        assert!(
            bad_unscaled > 0.05,
            "S = 1 left only {bad_unscaled} of the gradients below f16's normal range"
        );
        assert!(
            bad_scaled < 1e-3,
            "S = 2^16 left {bad_scaled} badly rounded"
        );
        assert!(
            err_scaled < 1e-2,
            "scaled mixed gradients far from f32: {err_scaled:e}"
        );
    }
}
