//! GPT-2 end to end: parity with Hugging Face transformers on the shared fixture (the
//! same function `wgformer parity` runs), a training step at GPT-2 124M's exact shape,
//! save → load round trips through the GPU model, and the memory report. The classifier
//! fused with the loss over vocabulary chunks: parity with the fixture, agreement with the
//! whole-logits path (loss, every gradient, AdamW steps, accumulation), and the automatic
//! choice of chunks for large logits.

use std::path::{Path, PathBuf};

use wgformer::gpu::GpuContext;
use wgformer::kernels::classifier::{ClassifierChunk, CLASSIFIER_CHUNK_THRESHOLD};
use wgformer::kernels::crossentropy::IGNORE_INDEX;
use wgformer::model::gpt2::{generate_greedy, Gpt2, OptimConfig, StepConfig, Trainer};
use wgformer::model::params::TENSORS_PER_LAYER;
use wgformer::model::Gpt2Config;
use wgformer::parity::{parity_gpt2, parity_gpt2_with};
use wgformer::rng::Rng;
use wgformer::testing::{assert_report, on_each_adapter, test_contexts};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

#[test]
fn parity_with_transformers_on_gpt2_tiny() {
    on_each_adapter(|ctx| {
        let report = ctx.block_on(parity_gpt2(ctx, &fixture())).unwrap();
        assert_report(&ctx.adapter_name(), &report);
        // logits, loss, 28 gradients, the AdamW losses and greedy decoding.
        assert_eq!(report.len(), 2 + 28 + 2);
    });
}

#[test]
fn gpt2_124m_shape_trains_a_step() {
    let cfg = Gpt2Config::preset("gpt2", None).unwrap();
    // The first adapter only: this is the suite's largest test by far.
    let needs = Gpt2::needs(&cfg, 1, 32);
    let ctx = test_contexts(&needs).remove(0);
    let model = Gpt2::init(&ctx, cfg.clone(), 1234).unwrap();
    let opt = OptimConfig {
        grad_clip: Some(1.0),
        ..OptimConfig::default()
    };
    let mut trainer = Trainer::new(&ctx, model, 1, 32, opt).unwrap();
    let report = trainer.memory(&ctx);
    eprintln!("{report}");
    // wte (147 MiB) is over the 128 MiB binding limit, so it must be bound in chunks.
    assert!(report.largest_binding.1 > ctx.binding_limit());
    let mut rng = Rng::new(5);
    let x: Vec<i32> = (0..32).map(|_| rng.below(50257) as i32).collect();
    let y: Vec<i32> = (0..32).map(|_| rng.below(50257) as i32).collect();
    let first = ctx.block_on(trainer.step(&ctx, &x, &y, 1e-4)).unwrap();
    let second = ctx.block_on(trainer.step(&ctx, &x, &y, 1e-4)).unwrap();
    eprintln!("124M: loss {first} then {second}");
    assert!(first.is_finite() && second.is_finite());
    // A random init predicts ~uniformly: ln(50257) ≈ 10.8.
    assert!((first - 50257f32.ln()).abs() < 1.0, "first loss {first}");
    assert!(second < first, "loss did not fall: {first} then {second}");
}

#[test]
fn gpu_model_saves_and_reloads_bit_for_bit() {
    on_each_adapter(|ctx| {
        let model = Gpt2::load(ctx, &fixture()).unwrap();
        let dir = std::env::temp_dir().join(format!("wgformer-gpt2-save-{}", std::process::id()));
        ctx.block_on(model.save(ctx, &dir)).unwrap();
        let again = Gpt2::load(ctx, &dir).unwrap();
        assert_eq!(again.config, model.config);
        let a = ctx.block_on(model.params.read_all(ctx)).unwrap();
        let b = ctx.block_on(again.params.read_all(ctx)).unwrap();
        assert_eq!(a, b);
        // The reloaded model generates exactly what the fixture's does.
        let prompt = [1, 2, 3];
        let g1 = ctx
            .block_on(generate_greedy(ctx, &model, &prompt, 12))
            .unwrap();
        let g2 = ctx
            .block_on(generate_greedy(ctx, &again, &prompt, 12))
            .unwrap();
        assert_eq!(g1, g2);
    });
}

#[test]
fn bad_batches_are_refused_with_a_reason() {
    on_each_adapter(|ctx| {
        let model = Gpt2::load(ctx, &fixture()).unwrap();
        let err = Trainer::new(ctx, model, 1, 33, OptimConfig::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("33"), "{err}");
        let model = Gpt2::load(ctx, &fixture()).unwrap();
        let trainer = Trainer::new(ctx, model, 1, 4, OptimConfig::default()).unwrap();
        let err = ctx
            .block_on(trainer.eval_loss(ctx, &[1, 2, 3, 101], &[1, 2, 3, 4]))
            .unwrap_err();
        assert!(err.to_string().contains("101"), "{err}");
        let err = ctx
            .block_on(trainer.eval_loss(ctx, &[1, 2, 3], &[1, 2, 3]))
            .unwrap_err();
        assert!(err.to_string().contains('4'), "{err}");
        // -100 targets are allowed (not counted) ...
        ctx.block_on(trainer.eval_loss(ctx, &[1, 2, 3, 4], &[-100, 2, 3, -100]))
            .unwrap();
        // ... other negative targets are not.
        let err = ctx
            .block_on(trainer.eval_loss(ctx, &[1, 2, 3, 4], &[-1, 2, 3, 4]))
            .unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
    });
}

/// The fixture's checks with the logits in chunks of 17 of its 101 columns (six chunks,
/// the last of 16): no logits line, everything else as the whole path.
#[test]
fn parity_with_transformers_chunked_classifier() {
    on_each_adapter(|ctx| {
        let chunk = ClassifierChunk::Columns(17);
        let report = ctx
            .block_on(parity_gpt2_with(ctx, &fixture(), chunk))
            .unwrap();
        // loss, 28 gradients, the AdamW losses and greedy decoding.
        assert_eq!(report.len(), 1 + 28 + 2);
        assert_report(&ctx.adapter_name(), &report);
    });
}

/// The gradient activations are one set that every block reuses (and two that carry the
/// residual's gradient, by parity), zeroed by the backward before each reuse. The
/// fixture's two blocks put in a six-block model as [block 0, id, id, block 1, id, id],
/// where "id" is block 0 with both output projections zero, so the block adds nothing to
/// the residual stream, compute the same function: the loss and the gradients of wte,
/// wpe, ln_f and the two real blocks must be the fixture's, bit for bit. A set not zeroed
/// before its reuse would add an earlier block's gradients into a later one's; and the
/// six blocks need no more gradient memory than two.
#[test]
fn blocks_share_their_gradient_activations() {
    on_each_adapter(|ctx| {
        let two = Gpt2::load(ctx, &fixture()).unwrap();
        let values = ctx.block_on(two.params.read_all(ctx)).unwrap();
        let per = TENSORS_PER_LAYER;
        let block = |l: usize| &values[2 + per * l..2 + per * (l + 1)];
        // attn.c_proj and mlp.c_proj, weight and bias (`gpt2_param_specs`' order)
        let id: Vec<Vec<f32>> = block(0)
            .iter()
            .enumerate()
            .map(|(i, v)| match i {
                4 | 5 | 10 | 11 => vec![0.0; v.len()],
                _ => v.clone(),
            })
            .collect();
        let order = [Some(0), None, None, Some(1), None, None];
        let mut six_values = values[..2].to_vec();
        for o in order {
            six_values.extend_from_slice(o.map_or(&id[..], block));
        }
        six_values.extend_from_slice(&values[2 + per * 2..]);
        let cfg = Gpt2Config {
            n_layer: order.len(),
            ..two.config.clone()
        };
        let six = Gpt2::from_values(ctx, cfg, &six_values).unwrap();
        let (b, t) = (2, 17);
        let (x, y) = batch(&mut Rng::new(11), b * t);
        let run = |model: Gpt2| {
            let trainer = Trainer::new(ctx, model, b, t, OptimConfig::default()).unwrap();
            let loss = ctx.block_on(trainer.forward_backward(ctx, &x, &y)).unwrap();
            let grads = ctx.block_on(trainer.gradients(ctx)).unwrap();
            let bytes: u64 = trainer.dacts.all().iter().map(|t| t.size_bytes()).sum();
            (loss, grads, bytes)
        };
        let (loss2, g2, bytes2) = run(two);
        let (loss6, g6, bytes6) = run(six);
        assert_eq!(loss6.to_bits(), loss2.to_bits(), "loss {loss6} vs {loss2}");
        let bits = |g: &[Vec<f32>]| -> Vec<Vec<u32>> {
            g.iter()
                .map(|v| v.iter().map(|x| x.to_bits()).collect())
                .collect()
        };
        let pairs = [
            ("wte, wpe", 0..2, 0..2),
            ("block 0", 2..2 + per, 2..2 + per),
            (
                "block 1 (at 3)",
                2 + per..2 + 2 * per,
                2 + 3 * per..2 + 4 * per,
            ),
            ("ln_f", g2.len() - 2..g2.len(), g6.len() - 2..g6.len()),
        ];
        for (what, i2, i6) in pairs {
            assert!(
                bits(&g6[i6]) == bits(&g2[i2]),
                "{}: the gradients of {what} differ between two blocks and six",
                ctx.adapter_name()
            );
        }
        assert_eq!(bytes6, bytes2, "six blocks' gradient activations");
    });
}

/// A trainer on the fixture with `chunk` and K micro-batches.
fn fixture_trainer(ctx: &GpuContext, chunk: ClassifierChunk, k: usize, b: usize) -> Trainer {
    let model = Gpt2::load(ctx, &fixture()).unwrap();
    let config = StepConfig {
        grad_accum: k,
        classifier_chunk: chunk,
        ..StepConfig::default()
    };
    Trainer::with_config(ctx, model, b, 17, OptimConfig::default(), config).unwrap()
}

/// Random tokens and targets over V = 101, about one target in six ignored.
fn batch(rng: &mut Rng, n: usize) -> (Vec<i32>, Vec<i32>) {
    let x = (0..n).map(|_| rng.below(101) as i32).collect();
    let y = (0..n)
        .map(|_| {
            if rng.below(6) == 0 {
                IGNORE_INDEX
            } else {
                rng.below(101) as i32
            }
        })
        .collect();
    (x, y)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Chunked and whole logits agree: the evaluation loss, every gradient of one
/// forward+backward, and the losses of AdamW steps (one micro-batch, and K = 2 with its
/// 1/2 gradient scale).
#[test]
fn chunked_classifier_matches_whole_logits() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(17);
        for (k, b) in [(1, 3), (2, 2)] {
            let mut whole = fixture_trainer(ctx, ClassifierChunk::Whole, k, b);
            let mut chunked = fixture_trainer(ctx, ClassifierChunk::Columns(17), k, b);
            assert!(whole.acts.classifier.is_none());
            assert_eq!(chunked.acts.classifier.as_ref().unwrap().columns, 17);
            assert_eq!(chunked.acts.logits.shape, vec![b, 17, 17]);
            let (x, y) = batch(&mut rng, b * 17);
            let lw = ctx.block_on(whole.eval_loss(ctx, &x, &y)).unwrap();
            let lc = ctx.block_on(chunked.eval_loss(ctx, &x, &y)).unwrap();
            assert!((lw - lc).abs() < 1e-5, "eval loss {lw} vs {lc}");
            let fw = ctx.block_on(whole.forward_backward(ctx, &x, &y)).unwrap();
            let fc = ctx.block_on(chunked.forward_backward(ctx, &x, &y)).unwrap();
            assert!((fw - fc).abs() < 1e-5, "loss {fw} vs {fc}");
            let gw = ctx.block_on(whole.grads.read_all(ctx)).unwrap();
            let gc = ctx.block_on(chunked.grads.read_all(ctx)).unwrap();
            let names = wgformer::model::params::gpt2_param_specs(&whole.model.config);
            for ((spec, a), c) in names.iter().zip(&gw).zip(&gc) {
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = max_diff(a, c);
                assert!(
                    d <= 1e-6 + 1e-4 * scale,
                    "grad {}: max |Δ| {d:e} (max |g| {scale:e})",
                    spec.name
                );
            }
            let (x, y) = batch(&mut rng, k * b * 17);
            for step in 0..3 {
                let sw = ctx.block_on(whole.step(ctx, &x, &y, 1e-3)).unwrap();
                let sc = ctx.block_on(chunked.step(ctx, &x, &y, 1e-3)).unwrap();
                eprintln!("K={k} step {step}: loss {sw} whole, {sc} chunked");
                assert!((sw - sc).abs() < 1e-5, "K={k} step {step}: {sw} vs {sc}");
            }
            // Weights are not compared: where a gradient is mathematically 0 (the key
            // bias: softmax ignores a constant added to a row of scores) it is rounding
            // noise, and AdamW turns noise of either sign into steps of about lr.
        }
    });
}

/// Logits over the threshold are chunked by default (the memory report and the device
/// needs shrink by about the logits' size), and the loss is the whole path's. A model
/// with GPT-2's vocabulary but 16 channels and one layer keeps this quick.
#[test]
fn large_logits_pick_the_chunked_classifier() {
    let cfg = Gpt2Config::new(50257, 192, 16, 1, 2);
    let (b, t) = (2, 192);
    let whole_bytes = (b * t * cfg.vocab_size * 4) as u64;
    assert!(whole_bytes > CLASSIFIER_CHUNK_THRESHOLD);
    let needs = Gpt2::needs(&cfg, b, t);
    let whole_needs = Gpt2::needs_with(&cfg, b, t, ClassifierChunk::Whole);
    assert_eq!(whole_needs.max_buffer_size, whole_bytes);
    assert!(needs.max_buffer_size <= whole_bytes / 2, "{needs:?}");
    let ctx = test_contexts(&whole_needs).remove(0);
    let trainer = |chunk| {
        let model = Gpt2::init(&ctx, cfg.clone(), 7).unwrap();
        let config = StepConfig {
            classifier_chunk: chunk,
            ..StepConfig::default()
        };
        Trainer::with_config(&ctx, model, b, t, OptimConfig::default(), config).unwrap()
    };
    let auto = trainer(ClassifierChunk::Auto);
    let whole = trainer(ClassifierChunk::Whole);
    let vc = auto.acts.classifier.as_ref().expect("chunked").columns;
    assert_eq!(auto.acts.logits.shape, vec![b, t, vc]);
    let (ma, mw) = (auto.memory(&ctx), whole.memory(&ctx));
    eprintln!("auto (Vc = {vc}):\n{ma}\nwhole:\n{mw}");
    let saved = mw.activations - ma.activations;
    let logits_saved = (b * t * (cfg.vocab_size - vc) * 4) as u64;
    let scratch = (b * t * 3 * 4 + vc * cfg.n_embd * 4) as u64;
    assert_eq!(saved, logits_saved - scratch);
    assert!(ma.activations * 2 < mw.activations);
    let mut rng = Rng::new(3);
    let x: Vec<i32> = (0..b * t).map(|_| rng.below(50257) as i32).collect();
    let y: Vec<i32> = (0..b * t).map(|_| rng.below(50257) as i32).collect();
    let la = ctx.block_on(auto.eval_loss(&ctx, &x, &y)).unwrap();
    let lw = ctx.block_on(whole.eval_loss(&ctx, &x, &y)).unwrap();
    eprintln!("loss {la} chunked, {lw} whole");
    assert!((la - lw).abs() < 1e-5, "{la} vs {lw}");
}
