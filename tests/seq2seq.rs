//! The encoder–decoder end to end: parity with torch.nn.Transformer on the shipped
//! fixture; at odd sizes (C 36, 3 heads, S ≠ T, unequal stacks and vocabularies) the
//! GPU forward against a CPU f64 forward composed of the kernels' references, the
//! backward against a directional finite difference of the GPU loss, the KV-cached
//! greedy decoder against full recomputation, beam search's scores against teacher
//! forcing; checkpoints round-trip in torch's layout; bad input gives errors that name
//! what is wrong.

use std::collections::HashMap;
use std::path::Path;

use wgformer::gpu::GpuContext;
use wgformer::infer::translate::{translate, TranslateOptions};
use wgformer::kernels::crossentropy::IGNORE_INDEX;
use wgformer::kernels::encoder::sinusoidal_positions;
use wgformer::kernels::mha::MhaLayout;
use wgformer::model::gpt2::OptimConfig;
use wgformer::model::seq2seq::params::{init_values, seq2seq_params};
use wgformer::model::seq2seq::trainer::Seq2seqBatchRef;
use wgformer::model::seq2seq::{load_values, Seq2seq, Seq2seqConfig, Seq2seqTrainer};
use wgformer::reference as r;
use wgformer::rng::Rng;
use wgformer::testing::{assert_report, directional_derivative, on_each_adapter};

const FIXTURE: &str = "../shared/fixtures/seq2seq-tiny";

fn odd_config() -> Seq2seqConfig {
    // C 36 with 3 heads: HS 12 (not a multiple of 8); 1 encoder and 3 decoder blocks;
    // vocabularies of 37 and 43; F 50.
    let mut c = Seq2seqConfig::new(36, 3, 1, 3, 50, 37, 43, 40);
    c.layer_norm_eps = 1e-6;
    c
}

/// Values with nonzero biases and perturbed norms, so every parameter matters.
fn odd_values(cfg: &Seq2seqConfig, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed ^ 99);
    init_values(cfg, seed)
        .into_iter()
        .zip(seq2seq_params(cfg))
        .map(|(v, p)| {
            if p.spec.decay {
                v.iter().map(|x| x * 2.0).collect()
            } else {
                v.iter().map(|x| x + 0.2 * rng.normal()).collect()
            }
        })
        .collect()
}

struct Batch {
    src: Vec<i32>,
    pad: Vec<i32>,
    tgt_in: Vec<i32>,
    tgt_out: Vec<i32>,
}

/// B 3, S 7, T 5: row 0 full, row 1 with 3 padded source positions, row 2 with 6 (one
/// real token); some targets ignored.
fn odd_batch(cfg: &Seq2seqConfig, seed: u64) -> (usize, usize, usize, Batch) {
    let (b, s, t) = (3, 7, 5);
    let mut rng = Rng::new(seed);
    let real = [7, 4, 1];
    let mut src = vec![0; b * s];
    let mut pad = vec![1; b * s];
    for (i, &n) in real.iter().enumerate() {
        for j in 0..n {
            src[i * s + j] = 3 + rng.below(cfg.src_vocab as u64 - 3) as i32;
            pad[i * s + j] = 0;
        }
    }
    let tgt_in: Vec<i32> = (0..b * t)
        .map(|_| rng.below(cfg.tgt_vocab as u64) as i32)
        .collect();
    let mut tgt_out: Vec<i32> = (0..b * t)
        .map(|_| rng.below(cfg.tgt_vocab as u64) as i32)
        .collect();
    tgt_out[b * t - 1] = IGNORE_INDEX;
    tgt_out[b * t - 2] = IGNORE_INDEX;
    (
        b,
        s,
        t,
        Batch {
            src,
            pad,
            tgt_in,
            tgt_out,
        },
    )
}

fn batch_ref(x: &Batch) -> Seq2seqBatchRef<'_> {
    Seq2seqBatchRef {
        src: &x.src,
        src_pad: &x.pad,
        tgt_in: &x.tgt_in,
        tgt_out: &x.tgt_out,
    }
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// x → norm(x + sub) in place of x.
fn add_norm(x: &mut [f64], sub: &[f64], w: &[f64], bias: &[f64], n: usize, c: usize, eps: f64) {
    let res: Vec<f64> = x.iter().zip(sub).map(|(a, b)| a + b).collect();
    let (mut mean, mut rstd) = (vec![0.0; n], vec![0.0; n]);
    r::layernorm::layernorm_forward(x, &mut mean, &mut rstd, &res, w, bias, 1, n, c, eps);
}

fn linear(x: &[f64], w: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    r::matmul::matmul_forward(&mut out, x, w, Some(b), m, k, n);
    out
}

/// The whole forward pass in f64 from the kernels' CPU references: logits (B, T, Vt).
fn cpu_forward(
    cfg: &Seq2seqConfig,
    values: &[Vec<f32>],
    x: &Batch,
    b: usize,
    s: usize,
    t: usize,
) -> Vec<f64> {
    let p: HashMap<String, Vec<f64>> = seq2seq_params(cfg)
        .into_iter()
        .zip(values)
        .map(|(p, v)| (p.spec.name, f64s(v)))
        .collect();
    let g = |n: &str| p.get(n).unwrap_or_else(|| panic!("no {n}")).as_slice();
    let (c, nh, f) = (cfg.d_model, cfg.heads, cfg.ffn);
    let eps = cfg.layer_norm_eps;
    let pe = f64s(&sinusoidal_positions(cfg.max_len, c));
    let scale = (c as f64).sqrt();
    let attn = |q: &[f64],
                kv: &[f64],
                mask: Option<&[i32]>,
                layout: MhaLayout,
                tq: usize,
                tk: usize,
                causal: bool| {
        let mut out = vec![0.0; b * tq * c];
        let mut stats = vec![0.0; b * nh * tq];
        r::mha::mha_forward(
            &mut out, &mut stats, q, kv, mask, layout, b, tq, tk, c, nh, causal,
        );
        out
    };
    let ffn = |x: &[f64], pre: &str, n: usize| {
        let h = linear(
            x,
            g(&format!("{pre}.linear1.weight")),
            g(&format!("{pre}.linear1.bias")),
            n,
            c,
            f,
        );
        let mut hr = vec![0.0; n * f];
        r::relu::relu_forward(&mut hr, &h, n * f);
        linear(
            &hr,
            g(&format!("{pre}.linear2.weight")),
            g(&format!("{pre}.linear2.bias")),
            n,
            f,
            c,
        )
    };
    let mut xs = vec![0.0; b * s * c];
    r::encoder::embed_forward(
        &mut xs,
        &x.src,
        g("src_emb.weight"),
        &pe,
        b,
        s,
        c,
        cfg.src_vocab,
        scale,
    );
    for l in 0..cfg.encoder_layers {
        let pre = format!("transformer.encoder.layers.{l}");
        let qkv = linear(
            &xs,
            g(&format!("{pre}.self_attn.in_proj_weight")),
            g(&format!("{pre}.self_attn.in_proj_bias")),
            b * s,
            c,
            3 * c,
        );
        let a = attn(&qkv, &qkv, Some(&x.pad), MhaLayout::packed(c), s, s, false);
        let proj = linear(
            &a,
            g(&format!("{pre}.self_attn.out_proj.weight")),
            g(&format!("{pre}.self_attn.out_proj.bias")),
            b * s,
            c,
            c,
        );
        add_norm(
            &mut xs,
            &proj,
            g(&format!("{pre}.norm1.weight")),
            g(&format!("{pre}.norm1.bias")),
            b * s,
            c,
            eps,
        );
        let h = ffn(&xs, &pre, b * s);
        add_norm(
            &mut xs,
            &h,
            g(&format!("{pre}.norm2.weight")),
            g(&format!("{pre}.norm2.bias")),
            b * s,
            c,
            eps,
        );
    }
    let mut memory = vec![0.0; b * s * c];
    let (mut m1, mut m2) = (vec![0.0; b * s], vec![0.0; b * s]);
    r::layernorm::layernorm_forward(
        &mut memory,
        &mut m1,
        &mut m2,
        &xs,
        g("transformer.encoder.norm.weight"),
        g("transformer.encoder.norm.bias"),
        b,
        s,
        c,
        eps,
    );
    let mut y = vec![0.0; b * t * c];
    r::encoder::embed_forward(
        &mut y,
        &x.tgt_in,
        g("tgt_emb.weight"),
        &pe,
        b,
        t,
        c,
        cfg.tgt_vocab,
        scale,
    );
    for l in 0..cfg.decoder_layers {
        let pre = format!("transformer.decoder.layers.{l}");
        let qkv = linear(
            &y,
            g(&format!("{pre}.self_attn.in_proj_weight")),
            g(&format!("{pre}.self_attn.in_proj_bias")),
            b * t,
            c,
            3 * c,
        );
        let a = attn(&qkv, &qkv, None, MhaLayout::packed(c), t, t, true);
        let proj = linear(
            &a,
            g(&format!("{pre}.self_attn.out_proj.weight")),
            g(&format!("{pre}.self_attn.out_proj.bias")),
            b * t,
            c,
            c,
        );
        add_norm(
            &mut y,
            &proj,
            g(&format!("{pre}.norm1.weight")),
            g(&format!("{pre}.norm1.bias")),
            b * t,
            c,
            eps,
        );
        let w = format!("{pre}.multihead_attn.in_proj_weight");
        let bb = format!("{pre}.multihead_attn.in_proj_bias");
        let q = linear(&y, g(&format!("{w}:q")), g(&format!("{bb}:q")), b * t, c, c);
        let kv = linear(
            &memory,
            g(&format!("{w}:kv")),
            g(&format!("{bb}:kv")),
            b * s,
            c,
            2 * c,
        );
        let a = attn(&q, &kv, Some(&x.pad), MhaLayout::cross(c), t, s, false);
        let proj = linear(
            &a,
            g(&format!("{pre}.multihead_attn.out_proj.weight")),
            g(&format!("{pre}.multihead_attn.out_proj.bias")),
            b * t,
            c,
            c,
        );
        add_norm(
            &mut y,
            &proj,
            g(&format!("{pre}.norm2.weight")),
            g(&format!("{pre}.norm2.bias")),
            b * t,
            c,
            eps,
        );
        let h = ffn(&y, &pre, b * t);
        add_norm(
            &mut y,
            &h,
            g(&format!("{pre}.norm3.weight")),
            g(&format!("{pre}.norm3.bias")),
            b * t,
            c,
            eps,
        );
    }
    let mut out = vec![0.0; b * t * c];
    let (mut m1, mut m2) = (vec![0.0; b * t], vec![0.0; b * t]);
    r::layernorm::layernorm_forward(
        &mut out,
        &mut m1,
        &mut m2,
        &y,
        g("transformer.decoder.norm.weight"),
        g("transformer.decoder.norm.bias"),
        b,
        t,
        c,
        eps,
    );
    let mut logits = vec![0.0; b * t * cfg.tgt_vocab];
    r::matmul::classifier_forward(
        &mut logits,
        &out,
        g("tgt_emb.weight"),
        b * t,
        c,
        cfg.tgt_vocab,
    );
    logits
}

#[test]
fn parity_with_torch_on_the_fixture() {
    on_each_adapter(|ctx| {
        let report = ctx
            .block_on(wgformer::parity::parity(ctx, Path::new(FIXTURE)))
            .expect("parity runs");
        assert_report(&ctx.adapter_name(), &report);
        assert!(report.len() > 60, "every gradient is compared");
    });
}

#[test]
fn forward_matches_the_cpu_reference_at_odd_sizes() {
    let cfg = odd_config();
    let values = odd_values(&cfg, 5);
    let (b, s, t, x) = odd_batch(&cfg, 6);
    let want = cpu_forward(&cfg, &values, &x, b, s, t);
    on_each_adapter(|ctx| {
        let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
        let tr = Seq2seqTrainer::new(ctx, model, (b, s, t), OptimConfig::default(), 1).unwrap();
        let loss = ctx.block_on(tr.eval_loss(ctx, &batch_ref(&x))).unwrap();
        let got = ctx.block_on(tr.acts.logits.read_f32(ctx)).unwrap();
        wgformer::testing::assert_close64("seq2seq logits", &got, &want, 2e-4, 2e-4);
        // The loss over the counted targets, from the reference logits.
        let v = cfg.tgt_vocab;
        let (mut sum, mut n) = (0.0, 0);
        for (i, &y) in x.tgt_out.iter().enumerate() {
            if y == IGNORE_INDEX {
                continue;
            }
            let row = &want[i * v..(i + 1) * v];
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            sum += lse - row[y as usize];
            n += 1;
        }
        assert!(
            (loss as f64 - sum / n as f64).abs() < 1e-4,
            "loss {loss} vs {}",
            sum / n as f64
        );
    });
}

#[test]
fn backward_matches_a_directional_finite_difference() {
    let cfg = odd_config();
    let values = odd_values(&cfg, 7);
    let (b, s, t, x) = odd_batch(&cfg, 8);
    on_each_adapter(|ctx| {
        let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
        let tr = Seq2seqTrainer::new(ctx, model, (b, s, t), OptimConfig::default(), 1).unwrap();
        ctx.block_on(tr.forward_backward(ctx, &batch_ref(&x)))
            .unwrap();
        let grads = ctx.block_on(tr.grads.read_all(ctx)).unwrap();
        // A random unit direction d over all parameters: dL/dε = <g, d>, against
        // (L(θ + εd) − L(θ − εd)) / 2ε.
        let (dot, fd) = directional_derivative(
            &values,
            &grads,
            11,
            |_| true,
            |moved| {
                tr.model.params.write_all(ctx, moved).unwrap();
                ctx.block_on(tr.eval_loss(ctx, &batch_ref(&x))).unwrap() as f64
            },
        );
        assert!(
            (fd - dot).abs() <= 2e-3 + 2e-2 * dot.abs(),
            "{}: directional derivative {fd} by differences, {dot} from the gradients",
            ctx.adapter_name()
        );
    });
}

/// Full recomputation: the decoder over the whole prefix at each step, argmax of the last.
fn greedy_by_recomputation(
    ctx: &GpuContext,
    model: &Seq2seq,
    src: &[u32],
    steps: usize,
) -> Vec<u32> {
    let s = src.len();
    let cfg = &model.config;
    let mut out: Vec<u32> = Vec::new();
    for i in 0..steps {
        let t = i + 1;
        let tr =
            Seq2seqTrainer::new(ctx, model.clone(), (1, s, t), OptimConfig::default(), 1).unwrap();
        let mut tgt_in = vec![cfg.bos_id as i32];
        tgt_in.extend(out.iter().map(|&x| x as i32));
        let batch = Batch {
            src: src.iter().map(|&x| x as i32).collect(),
            pad: vec![0; s],
            tgt_in,
            tgt_out: vec![0; t],
        };
        ctx.block_on(tr.eval_loss(ctx, &batch_ref(&batch))).unwrap();
        let logits = ctx.block_on(tr.acts.logits.read_f32(ctx)).unwrap();
        let v = cfg.tgt_vocab;
        let row = &logits[i * v..(i + 1) * v];
        let best = row
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |m, (j, &x)| if x > m.1 { (j, x) } else { m })
            .0;
        out.push(best as u32);
    }
    out
}

/// Sum of log-probabilities of `target` (then EOS if `finished`) given `src`, by teacher forcing.
fn score(ctx: &GpuContext, model: &Seq2seq, src: &[u32], target: &[u32], finished: bool) -> f64 {
    let cfg = &model.config;
    let t = target.len() + 1;
    let tr = Seq2seqTrainer::new(
        ctx,
        model.clone(),
        (1, src.len(), t),
        OptimConfig::default(),
        1,
    )
    .unwrap();
    let mut tgt_in = vec![cfg.bos_id as i32];
    tgt_in.extend(target.iter().map(|&x| x as i32));
    let batch = Batch {
        src: src.iter().map(|&x| x as i32).collect(),
        pad: vec![0; src.len()],
        tgt_in,
        tgt_out: vec![0; t],
    };
    ctx.block_on(tr.eval_loss(ctx, &batch_ref(&batch))).unwrap();
    let logits = ctx.block_on(tr.acts.logits.read_f32(ctx)).unwrap();
    let v = cfg.tgt_vocab;
    let mut total = 0.0;
    let ys: Vec<u32> = target
        .iter()
        .copied()
        .chain(finished.then_some(cfg.eos_id))
        .collect();
    for (i, &y) in ys.iter().enumerate() {
        let row = f64s(&logits[i * v..(i + 1) * v]);
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + row.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
        total += row[y as usize] - lse;
    }
    total
}

#[test]
fn cached_decoding_matches_recomputation_and_beams_score_truthfully() {
    let mut cfg = odd_config();
    cfg.eos_id = 2;
    let values = odd_values(&cfg, 21);
    let sources: Vec<Vec<u32>> = vec![vec![5, 9, 13, 4, 30, 7], vec![11, 3], vec![36]];
    on_each_adapter(|ctx| {
        let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
        let steps = 6;
        let greedy = TranslateOptions {
            beam: 1,
            max_len: steps,
            length_penalty: 0.0,
            stop_at_eos: false,
        };
        let hyps = ctx
            .block_on(translate(ctx, &model, &sources, &greedy, 3))
            .unwrap();
        for (src, h) in sources.iter().zip(&hyps) {
            assert_eq!(
                h.tokens,
                greedy_by_recomputation(ctx, &model, src, steps),
                "source {src:?}"
            );
        }
        let beam = TranslateOptions {
            beam: 4,
            max_len: 8,
            length_penalty: 0.0,
            stop_at_eos: true,
        };
        let beams = ctx
            .block_on(translate(ctx, &model, &sources, &beam, 2))
            .unwrap();
        let greedy_eos = TranslateOptions {
            beam: 1,
            max_len: 8,
            length_penalty: 0.0,
            stop_at_eos: true,
        };
        let greedy_hyps = ctx
            .block_on(translate(ctx, &model, &sources, &greedy_eos, 2))
            .unwrap();
        for ((src, h), g) in sources.iter().zip(&beams).zip(&greedy_hyps) {
            let truth = score(ctx, &model, src, &h.tokens, h.finished);
            assert!(
                (truth - h.log_prob as f64).abs() < 1e-3,
                "beam score {} vs teacher forcing {truth}",
                h.log_prob
            );
            // Without length normalisation, beam search keeps greedy's path among its candidates.
            if h.finished && g.finished {
                assert!(
                    h.log_prob >= g.log_prob - 1e-4,
                    "beam {} below greedy {}",
                    h.log_prob,
                    g.log_prob
                );
            }
        }
    });
}

#[test]
fn checkpoints_round_trip_in_torch_layout() {
    let dir = std::env::temp_dir().join(format!("wgformer-seq2seq-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = odd_config();
    let values = odd_values(&cfg, 3);
    on_each_adapter(|ctx| {
        let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
        ctx.block_on(model.save(ctx, &dir)).unwrap();
        let back = Seq2seq::load(ctx, &dir).unwrap();
        assert_eq!(back.config, cfg);
        assert_eq!(ctx.block_on(back.params.read_all(ctx)).unwrap(), values);
    });
    // The fixture itself: torch's in_proj_weight (3C, C) etc. load, and save back bit for bit.
    let fcfg = Seq2seqConfig::from_file(&Path::new(FIXTURE).join("config.json")).unwrap();
    let vals = load_values(&Path::new(FIXTURE).join("model.safetensors"), &fcfg).unwrap();
    let out = dir.join("fixture.safetensors");
    wgformer::model::seq2seq::save_values(&out, &fcfg, &vals).unwrap();
    let a = safetensors_map(&Path::new(FIXTURE).join("model.safetensors"));
    let b = safetensors_map(&out);
    assert_eq!(a, b, "the fixture's tensors are written back unchanged");
    let _ = std::fs::remove_dir_all(&dir);
}

fn safetensors_map(path: &Path) -> HashMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

#[test]
fn bad_checkpoints_and_batches_are_named() {
    // A config with one more decoder layer than the file holds.
    let dir = std::env::temp_dir().join(format!("wgformer-seq2seq-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = Seq2seqConfig::from_file(&Path::new(FIXTURE).join("config.json")).unwrap();
    cfg.decoder_layers = 3;
    let err = load_values(&Path::new(FIXTURE).join("model.safetensors"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transformer.decoder.layers.2.self_attn.in_proj_weight"),
        "{err}"
    );
    cfg.decoder_layers = 1;
    let err = load_values(&Path::new(FIXTURE).join("model.safetensors"), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("transformer.decoder.layers.1"), "{err}");
    let bad = r#"{"d_model": 32, "heads": 5, "encoder_layers": 1, "decoder_layers": 1, "ffn": 8, "vocab": 9}"#;
    let err = Seq2seqConfig::from_json(bad, "x/config.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x/config.json") && err.contains("heads"),
        "{err}"
    );
    let gelu = r#"{"d_model": 32, "heads": 4, "encoder_layers": 1, "decoder_layers": 1, "ffn": 8, "vocab": 9, "activation": "gelu"}"#;
    assert!(Seq2seqConfig::from_json(gelu, "c")
        .unwrap_err()
        .to_string()
        .contains("activation"));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = odd_config();
    let (b, s, t, mut x) = odd_batch(&cfg, 1);
    x.src[4] = cfg.src_vocab as i32;
    on_each_adapter(|ctx| {
        let model = Seq2seq::init(ctx, cfg.clone(), 1).unwrap();
        let tr = Seq2seqTrainer::new(ctx, model, (b, s, t), OptimConfig::default(), 1).unwrap();
        let err = ctx
            .block_on(tr.eval_loss(ctx, &batch_ref(&x)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("src[4]"), "{err}");
    });
}

/// The output projection fused with the loss and chunked over the target vocabulary
/// (chunks that do not divide it) gives whole logits' loss, every gradient and AdamW
/// losses; its logits buffer holds one chunk.
#[test]
fn chunked_classifier_matches_whole_logits() {
    use wgformer::kernels::classifier::ClassifierChunk;
    let cfg = odd_config();
    let values = odd_values(&cfg, 7);
    let (b, s, t, x) = odd_batch(&cfg, 8);
    on_each_adapter(|ctx| {
        let make = |chunk| {
            let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
            let opt = OptimConfig::default();
            Seq2seqTrainer::with_classifier(ctx, model, (b, s, t), opt, 1, chunk).unwrap()
        };
        let mut whole = make(ClassifierChunk::Whole);
        assert!(whole.acts.classifier.is_none());
        let vc = cfg.tgt_vocab / 3 + 1;
        let mut chunked = make(ClassifierChunk::Columns(vc));
        assert_eq!(chunked.acts.logits.numel(), b * t * vc);
        let xb = batch_ref(&x);
        let lw = ctx.block_on(whole.forward_backward(ctx, &xb)).unwrap();
        let lc = ctx.block_on(chunked.forward_backward(ctx, &xb)).unwrap();
        assert!((lw - lc).abs() < 1e-5, "loss {lw} vs chunked {lc}");
        let gw = ctx.block_on(whole.grads.read_all(ctx)).unwrap();
        let gc = ctx.block_on(chunked.grads.read_all(ctx)).unwrap();
        for (i, (a, c)) in gw.iter().zip(&gc).enumerate() {
            wgformer::testing::assert_close64(&format!("grad {i}"), c, &f64s(a), 1e-6, 1e-4);
        }
        for step in 0..3 {
            let a = ctx.block_on(whole.step(ctx, &xb, 1e-2)).unwrap();
            let c = ctx.block_on(chunked.step(ctx, &xb, 1e-2)).unwrap();
            assert!((a - c).abs() < 1e-4, "step {step}: loss {a} vs chunked {c}");
        }
    });
}

/// Dropout (the embedded source and target, and every block's sublayer outputs). Its
/// masks follow from the seed and the step number, so a step at lr 0 with the step
/// counter wound back is one loss under fixed masks, and the gradients that step leaves
/// must agree with central differences of that loss. Also: the same seed draws the same
/// masks and another seed others, evaluation never drops, and a rate of 0 is the plain
/// step bit for bit.
#[test]
fn dropout_is_seeded_and_its_gradients_match_finite_differences() {
    use wgformer::model::gpt2::StepConfig;
    let cfg = odd_config();
    let values = odd_values(&cfg, 17);
    let (b, s, t, x) = odd_batch(&cfg, 18);
    on_each_adapter(|ctx| {
        let opt = OptimConfig {
            grad_clip: None,
            ..OptimConfig::default()
        };
        let trainer = |rate: f32, seed: u64| {
            let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
            let sc = StepConfig {
                dropout: rate,
                seed,
                ..StepConfig::default()
            };
            Seq2seqTrainer::with_config(ctx, model, (b, s, t), opt.clone(), sc).unwrap()
        };
        // Step 0's masks, at lr 0: the weights stay as they are.
        let masked_loss = |tr: &mut Seq2seqTrainer| {
            tr.step = 0;
            ctx.block_on(tr.step(ctx, &batch_ref(&x), 0.0)).unwrap()
        };
        let what = ctx.adapter_name();
        let mut tr = trainer(0.3, 7);
        let eval = ctx.block_on(tr.eval_loss(ctx, &batch_ref(&x))).unwrap();
        let loss = masked_loss(&mut tr);
        let grads = ctx.block_on(tr.grads.read_all(ctx)).unwrap();
        let again = masked_loss(&mut trainer(0.3, 7));
        let other = masked_loss(&mut trainer(0.3, 8));
        let mut plain_tr = trainer(0.0, 7);
        let plain_eval = ctx
            .block_on(plain_tr.eval_loss(ctx, &batch_ref(&x)))
            .unwrap();
        let plain = masked_loss(&mut plain_tr);
        let model = Seq2seq::from_values(ctx, cfg.clone(), &values).unwrap();
        let mut default_tr = Seq2seqTrainer::new(ctx, model, (b, s, t), opt.clone(), 1).unwrap();
        let default = masked_loss(&mut default_tr);
        assert_eq!(loss.to_bits(), again.to_bits(), "{what}: same seed");
        assert_ne!(loss.to_bits(), other.to_bits(), "{what}: another seed");
        assert_ne!(
            loss.to_bits(),
            plain.to_bits(),
            "{what}: dropout changes the loss"
        );
        assert_eq!(
            eval.to_bits(),
            plain_eval.to_bits(),
            "{what}: evaluation drops"
        );
        assert_eq!(
            plain.to_bits(),
            default.to_bits(),
            "{what}: rate 0 is no dropout"
        );

        // Along a random direction over every parameter, and over each embedding table
        // alone (whose share of the first is too small to show their dropout). The
        // gradients match the differences to about 3e-5 here; a missing un-drop of the
        // embedded source is off by 3e-3, so the tolerance is tighter than elsewhere.
        let names = seq2seq_params(&cfg);
        for only in ["", "src_emb", "tgt_emb"] {
            let pick = |i: usize| names[i].spec.name.starts_with(only);
            let (dot, fd) = directional_derivative(&values, &grads, 19, pick, |moved| {
                tr.model.params.write_all(ctx, moved).unwrap();
                masked_loss(&mut tr) as f64
            });
            assert!(
                (fd - dot).abs() <= 2e-4 + 2e-3 * dot.abs(),
                "{what} (parameters {only:?}…): {dot} from the dropout step's gradients, \
                 {fd} by differences"
            );
        }
    });
}
