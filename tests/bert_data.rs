//! The CPU side of BERT training, no GPU needed: the special ids of a WordPiece tokenizer
//! (built here in code) and the error for a missing one; masked-LM batches (`[CLS]` first,
//! `[SEP]` last, masking only inside the window, at least one target per row, the 80/10/10
//! split within statistical bounds, random replacements never special, -100 elsewhere, a
//! pure function of (seed, step), stable evaluation batches); labeled text (reading and its
//! file:line errors, label order, tokenizing with truncation, batch padding and empty rows,
//! the seeded split and epoch order); and the shipped assets/data/sentiment.jsonl.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};
use wgformer::kernels::crossentropy::IGNORE_INDEX;
use wgformer::rng::Rng;
use wgformer::train::classify::{
    class_batch, label_set, read_labeled, tokenize_labeled, ClassBatches, LabeledExample,
    LabeledText,
};
use wgformer::train::mlm::{bert_specials, BertBatch, BertSpecials, MlmBatches};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-bert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn err_of<T>(r: wgformer::error::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

const VOCAB: [&str; 16] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "was", "great", "bad", "not",
    "good", "play", "##ing", "##s", ".",
];

/// A tiny uncased WordPiece tokenizer as BERT's (normalizer, pre-tokenizer, specials),
/// with `skip` left out of its vocabulary.
fn wordpiece(skip: Option<&str>) -> Tokenizer {
    let words: Vec<&str> = VOCAB.iter().copied().filter(|w| Some(*w) != skip).collect();
    // WordPiece takes the same map type as BPE's vocabulary.
    let vocab: tokenizers::models::bpe::Vocab = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let wp = WordPiece::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::default()));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let specials: Vec<AddedToken> = words
        .iter()
        .filter(|w| w.starts_with('['))
        .map(|w| AddedToken::from(*w, true))
        .collect();
    tok.add_special_tokens(&specials);
    tok
}

const SP: BertSpecials = BertSpecials {
    cls: 2,
    sep: 3,
    pad: 0,
    mask: 4,
    unk: 1,
};

#[test]
fn bert_specials_are_found_and_a_missing_one_is_named() {
    let tok = wordpiece(None);
    assert_eq!(bert_specials(&tok, "tiny").unwrap(), SP);
    let e = err_of(bert_specials(
        &wordpiece(Some("[MASK]")),
        "my/tokenizer.json",
    ));
    assert!(
        e.contains("my/tokenizer.json") && e.contains("no [MASK] token"),
        "{e}"
    );
}

// ---- masked LM ----

/// Every row of `b` (rows of `t`): `[CLS]` first and `[SEP]` last without targets, full
/// attention, token types 0, at least one target, targets only inside; a selected position
/// holds `[MASK]`, the original or a non-special id below `vocab`; an unselected one the
/// original. Returns each row's original tokens (the targets put back).
fn check_layout(b: &BertBatch, t: usize, vocab: usize, sp: BertSpecials) -> Vec<Vec<u32>> {
    assert_eq!(b.ids.len() % t, 0);
    let rows = b.ids.len() / t;
    assert!(b.attn_mask.iter().all(|&m| m == 1));
    assert!(b.token_types.iter().all(|&m| m == 0));
    assert_eq!(b.targets.len(), rows * t);
    let specials = sp.all();
    (0..rows)
        .map(|r| {
            let ids = &b.ids[r * t..(r + 1) * t];
            let tg = &b.targets[r * t..(r + 1) * t];
            assert_eq!(ids[0], sp.cls as i32, "row {r}");
            assert_eq!(ids[t - 1], sp.sep as i32, "row {r}");
            assert_eq!(tg[0], IGNORE_INDEX);
            assert_eq!(tg[t - 1], IGNORE_INDEX);
            assert!(
                tg.iter().any(|&v| v != IGNORE_INDEX),
                "row {r} has no target"
            );
            (1..t - 1)
                .map(|j| {
                    if tg[j] == IGNORE_INDEX {
                        ids[j] as u32
                    } else {
                        let id = ids[j] as u32;
                        assert!(
                            id == sp.mask
                                || id == tg[j] as u32
                                || ((id as usize) < vocab && !specials.contains(&id)),
                            "row {r} position {j}: id {id} for target {}",
                            tg[j]
                        );
                        tg[j] as u32
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn mlm_rows_are_cls_window_sep_with_masks_inside() {
    // Distinct ids, so a row's original tokens say where its window starts.
    let data: Vec<u32> = (5..905).collect();
    let m = MlmBatches::new(data.clone(), vec![], 7, SP, 1000, 0.15).unwrap();
    for (t, rows) in [(3, 40), (10, 8), (64, 3)] {
        m.check(t).unwrap();
        let b = m.train_batch(2, rows, t);
        assert_eq!(b.ids.len(), rows * t);
        for orig in check_layout(&b, t, 1000, SP) {
            let at = (orig[0] - 5) as usize;
            assert_eq!(orig, data[at..at + t - 2], "T = {t}");
        }
    }
    // Data one token longer than the window: offsets 0 and 1, both drawn.
    let short = MlmBatches::new(vec![9, 10, 11], vec![], 1, SP, 20, 0.01).unwrap();
    short.check(4).unwrap();
    let rows = check_layout(&short.train_batch(0, 16, 4), 4, 20, SP);
    let starts: BTreeSet<u32> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(starts, BTreeSet::from([9, 10]));
    assert!(rows.iter().all(|r| r[1] == r[0] + 1));
}

#[test]
fn mlm_masking_is_80_10_10_over_many_rows() {
    let vocab = 1000;
    let mut rng = Rng::new(3);
    let data: Vec<u32> = (0..20_000).map(|_| 5 + rng.below(995) as u32).collect();
    let (t, rows, steps) = (34, 500, 8);
    let m = MlmBatches::new(data, vec![], 11, SP, vocab, 0.15).unwrap();
    let (mut window, mut selected, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
    let mut replacements = BTreeSet::new();
    for step in 0..steps {
        let b = m.train_batch(step, rows, t);
        check_layout(&b, t, vocab, SP);
        window += rows * (t - 2);
        for (&id, &tg) in b.ids.iter().zip(&b.targets) {
            if tg == IGNORE_INDEX {
                continue;
            }
            selected += 1;
            if id == SP.mask as i32 {
                masked += 1;
            } else if id == tg {
                kept += 1;
            } else {
                random += 1;
                replacements.insert(id);
            }
        }
    }
    // Binomial bounds at 5 standard deviations. A random id equals the original with
    // p 1/995, counted as kept; "at least one per row" adds ≤ 0.85^32 per row.
    let within = |name: &str, k: usize, n: usize, p: f64| {
        let f = k as f64 / n as f64;
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        println!("{name}: {f:.4} (expected {p:.4} ± {:.4})", 5.0 * sd);
        assert!((f - p).abs() < 5.0 * sd + 1e-3, "{name}: {f} vs {p}");
    };
    within("selected", selected, window, 0.15);
    within("[MASK]", masked, selected, 0.8);
    within("random", random, selected, 0.1 * (1.0 - 1.0 / 995.0));
    within("kept", kept, selected, 0.1 + 0.1 / 995.0);
    assert!(replacements.len() > 500, "{} distinct", replacements.len());

    // mask_prob is honoured.
    let half = MlmBatches::new(m.train.clone(), vec![], 11, SP, vocab, 0.5).unwrap();
    let b = half.train_batch(0, 200, t);
    within("selected at 0.5", b.counted(), 200 * (t - 2), 0.5);
}

#[test]
fn mlm_random_replacements_skip_scattered_specials() {
    // Specials 0, 3, 5, 6, 7 of a vocabulary of 8: random ids are 1, 2 or 4, each reached.
    let sp = BertSpecials {
        cls: 7,
        sep: 3,
        pad: 0,
        mask: 5,
        unk: 6,
    };
    let data = vec![1, 2, 4, 6, 1, 2, 4, 1, 2, 4, 4, 2];
    let m = MlmBatches::new(data, vec![], 5, sp, 8, 0.9).unwrap();
    let mut seen = BTreeSet::new();
    for step in 0..100 {
        let b = m.train_batch(step, 16, 8);
        check_layout(&b, 8, 8, sp);
        for (&id, &tg) in b.ids.iter().zip(&b.targets) {
            if tg != IGNORE_INDEX && id != tg && id != sp.mask as i32 {
                seen.insert(id);
            }
        }
    }
    assert_eq!(seen, BTreeSet::from([1, 2, 4]));
}

#[test]
fn mlm_batches_are_a_function_of_seed_and_step() {
    let mut rng = Rng::new(1);
    let data: Vec<u32> = (0..3000).map(|_| 5 + rng.below(95) as u32).collect();
    let val: Vec<u32> = (0..500).map(|i| 100 + i % 50).collect();
    let a = MlmBatches::new(data.clone(), val.clone(), 42, SP, 150, 0.15).unwrap();
    let b = MlmBatches::new(data.clone(), val.clone(), 42, SP, 150, 0.15).unwrap();
    let c = MlmBatches::new(data.clone(), val.clone(), 43, SP, 150, 0.15).unwrap();
    let key = |x: &BertBatch| (x.ids.clone(), x.targets.clone());
    for step in [0, 1, 99] {
        assert_eq!(
            key(&a.train_batch(step, 4, 16)),
            key(&b.train_batch(step, 4, 16))
        );
        assert_ne!(
            key(&a.train_batch(step, 4, 16)),
            key(&c.train_batch(step, 4, 16))
        );
    }
    assert_ne!(key(&a.train_batch(0, 4, 16)), key(&a.train_batch(1, 4, 16)));
    // Evaluation: the same at every call, from the validation split.
    let e1: Vec<_> = a.eval_batches(3, 4, 16).iter().map(key).collect();
    let e2: Vec<_> = a.eval_batches(3, 4, 16).iter().map(key).collect();
    assert_eq!(e1.len(), 3);
    assert_eq!(e1, e2);
    for e in a.eval_batches(3, 4, 16) {
        for orig in check_layout(&e, 16, 150, SP) {
            assert!(orig.iter().all(|&v| (100..150).contains(&v)), "{orig:?}");
        }
    }
    // A validation split shorter than a window: evaluation uses the training split.
    let d = MlmBatches::new(data, vec![100; 10], 42, SP, 150, 0.15).unwrap();
    for e in d.eval_batches(2, 4, 16) {
        for orig in check_layout(&e, 16, 150, SP) {
            assert!(orig.iter().all(|&v| v < 100), "{orig:?}");
        }
    }
}

#[test]
fn mlm_new_and_check_refuse_what_cannot_work() {
    let data = vec![5u32; 20];
    let new = |train: Vec<u32>, vocab: usize, p: f64| {
        MlmBatches::new(train, vec![], 1, SP, vocab, p).map(|_| ())
    };
    for p in [0.0, 1.0, -0.1, f64::NAN] {
        assert!(err_of(new(data.clone(), 10, p)).contains("mask probability"));
    }
    assert!(err_of(new(vec![], 10, 0.15)).contains("no tokens"));
    assert!(err_of(new(data.clone(), 4, 0.15)).contains("special id 4"));
    assert!(err_of(new(vec![5, 12], 10, 0.15)).contains("token id 12"));
    assert!(err_of(new(vec![1, 2], 5, 0.15)).contains("only special tokens"));
    let m = MlmBatches::new(data, vec![], 1, SP, 10, 0.15).unwrap();
    assert!(err_of(m.check(2)).contains("at least 3 positions"));
    m.check(21).unwrap();
    assert!(err_of(m.check(22)).contains("too short"));
}

// ---- labeled text ----

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    f
}

fn lt(text: &str, label: &str) -> LabeledText {
    LabeledText {
        text: text.into(),
        label: label.into(),
    }
}

#[test]
fn read_labeled_reads_and_names_bad_lines() {
    let d = scratch("read");
    let f = write(
        &d,
        "ok.jsonl",
        concat!(
            "{\"text\": \"The film was great\", \"label\": \"positive\"}\n\n   \n",
            "{\"label\": 3, \"text\": \"not good\", \"id\": 9}\n",
            "{\"text\": \"x\", \"label\": -1}\n"
        ),
    );
    assert_eq!(
        read_labeled(&f).unwrap(),
        vec![
            lt("The film was great", "positive"),
            lt("not good", "3"),
            lt("x", "-1")
        ]
    );
    let good = "{\"text\": \"a\", \"label\": \"b\"}\n";
    for (line, want) in [
        ("{\"text\": \"a\", \"label\": }", "not JSON"),
        ("[1, 2]", "found an array"),
        ("{\"label\": \"b\"}", "missing the \"text\" field"),
        ("{\"text\": 5, \"label\": \"b\"}", "\"text\" is a number"),
        ("{\"text\": \"  \", \"label\": \"b\"}", "the text is empty"),
        ("{\"text\": \"a\"}", "missing the \"label\" field"),
        ("{\"text\": \"a\", \"label\": 1.5}", "not an integer"),
        (
            "{\"text\": \"a\", \"label\": true}",
            "\"label\" is a boolean",
        ),
        ("{\"text\": \"a\", \"label\": \"\"}", "the label is empty"),
    ] {
        let f = write(&d, "bad.jsonl", &format!("{good}\n{line}\n{good}"));
        let e = err_of(read_labeled(&f));
        assert!(
            e.contains(&format!("{} line 3: ", f.display())) && e.contains(want),
            "{line}: {e}"
        );
    }
    let f = write(&d, "empty.jsonl", "\n  \n");
    assert!(err_of(read_labeled(&f)).contains("no examples"));
    assert!(read_labeled(&d.join("missing.jsonl")).is_err());
}

#[test]
fn label_set_sorts_numbers_numerically_and_text_lexicographically() {
    let set = |labels: &[&str]| {
        let items: Vec<LabeledText> = labels.iter().map(|l| lt("t", l)).collect();
        label_set(&items)
    };
    assert_eq!(set(&["pos", "neg", "pos", "mid"]), ["mid", "neg", "pos"]);
    assert_eq!(set(&["10", "2", "1", "2"]), ["1", "2", "10"]);
    assert_eq!(set(&["1", "-3", "0"]), ["-3", "0", "1"]);
    assert_eq!(set(&["10", "2", "x"]), ["10", "2", "x"]);
}

#[test]
fn tokenize_labeled_adds_cls_sep_and_truncates() {
    let tok = wordpiece(None);
    let items = vec![
        lt("The film was GREAT.", "pos"),
        lt("not playing films", "neg"),
        lt("zzz", "pos"),
    ];
    let labels = label_set(&items);
    assert_eq!(labels, ["neg", "pos"]);
    let ex = tokenize_labeled(&items, &labels, &tok, SP, 16, "tiny").unwrap();
    assert_eq!(
        ex,
        vec![
            LabeledExample {
                ids: vec![2, 5, 6, 7, 8, 15, 3],
                label: 1
            },
            LabeledExample {
                ids: vec![2, 10, 12, 13, 6, 14, 3],
                label: 0
            },
            LabeledExample {
                ids: vec![2, 1, 3],
                label: 1
            },
        ]
    );
    // T = 4 keeps two tokens; T = 3 one.
    let ex = tokenize_labeled(&items, &labels, &tok, SP, 4, "tiny").unwrap();
    assert_eq!(ex[0].ids, [2, 5, 6, 3]);
    assert_eq!(ex[2].ids, [2, 1, 3]);
    let ex = tokenize_labeled(&items, &labels, &tok, SP, 3, "tiny").unwrap();
    assert_eq!(ex[1].ids, [2, 10, 3]);
    let e = err_of(tokenize_labeled(&items, &labels, &tok, SP, 2, "tiny"));
    assert!(e.contains("at least 3 positions"), "{e}");
    let e = err_of(tokenize_labeled(
        &items,
        &["pos".to_string()],
        &tok,
        SP,
        8,
        "data.jsonl",
    ));
    assert!(
        e.contains("data.jsonl (example 2)") && e.contains("\"neg\""),
        "{e}"
    );
}

fn ex(ids: &[u32], label: usize) -> LabeledExample {
    LabeledExample {
        ids: ids.to_vec(),
        label,
    }
}

#[test]
fn class_batch_pads_rows_and_fills_empty_ones() {
    let (a, b) = (ex(&[2, 5, 6, 3], 1), ex(&[2, 9, 3], 0));
    let batch = class_batch(&[&a, &b], 3, 5, SP);
    assert_eq!(batch.rows, 2);
    assert_eq!(batch.ids, [2, 5, 6, 3, 0, 2, 9, 3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        batch.attn_mask,
        [1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    );
    assert_eq!(batch.token_types, [0; 15]);
    assert_eq!(batch.labels, [1, 0, IGNORE_INDEX]);
    // A full row has no padding.
    let full = class_batch(&[&a], 1, 4, SP);
    assert_eq!((full.ids, full.attn_mask), (vec![2, 5, 6, 3], vec![1; 4]));
}

#[test]
#[should_panic(expected = "class_batch: 2 examples for 1 rows")]
fn class_batch_refuses_more_examples_than_rows() {
    let a = ex(&[2, 3], 0);
    class_batch(&[&a, &a], 1, 4, SP);
}

#[test]
fn class_batches_split_and_epochs_are_seeded() {
    let examples: Vec<LabeledExample> = (0..50).map(|i| ex(&[2, 5 + i, 3], i as usize)).collect();
    let cb = |seed| ClassBatches::new(examples.clone(), 0.2, seed, 8, SP).unwrap();
    let (a, b, c) = (cb(1), cb(1), cb(2));
    assert_eq!((a.train.len(), a.val.len()), (40, 10));
    assert_eq!((a.train.clone(), a.val.clone()), (b.train, b.val));
    assert_ne!(a.val, c.val);
    let mut all: Vec<usize> = a.train.iter().chain(&a.val).map(|e| e.label).collect();
    all.sort();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    // Steps of 8 rows: 5 steps are one epoch, visiting each training example once.
    for epoch in 0..2 {
        let mut seen: Vec<i32> = (0..5)
            .flat_map(|s| a.train_batch(epoch * 5 + s, 8).labels)
            .collect();
        seen.sort();
        let mut want: Vec<i32> = a.train.iter().map(|e| e.label as i32).collect();
        want.sort();
        assert_eq!(seen, want, "epoch {epoch}");
    }
    assert_ne!(a.train_batch(0, 8).labels, a.train_batch(5, 8).labels);
    assert_eq!(a.train_batch(7, 3).ids, cb(1).train_batch(7, 3).ids);
    let tb = a.train_batch(3, 6);
    assert_eq!((tb.rows, tb.ids.len(), tb.labels.len()), (6, 48, 6));
    // Validation: in order, the last batch padded, the same at every call.
    let v = a.val_batches(4);
    assert_eq!(v.len(), 3);
    let labels: Vec<i32> = v.iter().flat_map(|b| b.labels.clone()).collect();
    let mut want: Vec<i32> = a.val.iter().map(|e| e.label as i32).collect();
    want.extend([IGNORE_INDEX; 2]);
    assert_eq!(labels, want);
    assert_eq!(v[2].rows, 2);
    assert_eq!(a.val_batches(4)[1].ids, v[1].ids);
    // No validation split: the (shuffled) training examples in their stored order.
    let none = ClassBatches::new(examples.clone(), 0.0, 1, 8, SP).unwrap();
    assert!(none.val.is_empty());
    let order: Vec<i32> = none.train.iter().map(|e| e.label as i32).collect();
    assert_eq!(none.val_batches(50)[0].labels, order);
}

#[test]
fn class_batches_refuse_what_cannot_work() {
    let e = |examples: Vec<LabeledExample>, f: f64, t: usize| {
        err_of(ClassBatches::new(examples, f, 1, t, SP).map(|_| ()))
    };
    let two = vec![ex(&[2, 5, 3], 0), ex(&[2, 6, 3], 1)];
    assert!(e(two.clone(), 1.0, 8).contains("--val-fraction 1"));
    assert!(e(two.clone(), -0.1, 8).contains("--val-fraction"));
    assert!(e(vec![], 0.1, 8).contains("no labeled examples"));
    assert!(e(vec![ex(&[2, 3], 0)], 0.5, 8).contains("leave no training example"));
    assert!(e(two.clone(), 0.1, 2).contains("at least 3 positions"));
    let long = vec![ex(&[2, 3], 0), ex(&[2, 5, 6, 7, 3], 1)];
    assert!(e(long, 0.0, 4).contains("example 2 has 5 tokens"));
    // One example and a positive fraction of two: one trains, one validates.
    let s = ClassBatches::new(two, 0.01, 1, 8, SP).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (1, 1));
}

#[test]
fn shipped_sentiment_set_parses_and_is_balanced() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/sentiment.jsonl");
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert!(bytes < 60_000, "{bytes} bytes");
    let items = read_labeled(&path).unwrap();
    let labels = label_set(&items);
    assert_eq!(labels, ["negative", "positive"]);
    let pos = items.iter().filter(|i| i.label == "positive").count();
    assert_eq!(pos * 2, items.len(), "{pos} positive of {}", items.len());
    assert!(items.len() >= 500, "{} examples", items.len());
    let distinct: BTreeSet<&str> = items.iter().map(|i| i.text.as_str()).collect();
    assert_eq!(distinct.len(), items.len(), "duplicate texts");
    // Tokenized with the tiny vocabulary (mostly [UNK]) every text fits T = 64.
    let ex = tokenize_labeled(&items, &labels, &wordpiece(None), SP, 64, "sentiment").unwrap();
    assert!(ex.iter().all(|e| e.ids.len() < 64 && e.ids.len() >= 3));
}
