//! The CPU side of training, no GPU needed: tokenizers (char, byte, GPT-2, trained BPE,
//! a given tokenizer.json, normalization), corpora (files, directories, JSONL), the
//! token cache, pretraining batches, fine-tuning rows (padded and packed, prompts
//! masked with -100), the learning-rate schedule, the metrics log and plot, and the
//! checkpoint directory's crash recovery.

use std::path::{Path, PathBuf};

use wgformer::kernels::crossentropy::IGNORE_INDEX;
use wgformer::train::data::{
    read_examples, Batches, Corpus, SftBatches, TextBatches, TokenCache, TINY_SHAKESPEARE,
};
use wgformer::train::metrics::{Metrics, Record};
use wgformer::train::state::find_checkpoint;
use wgformer::train::tokenize::{
    build, decode, encode_text, eot_id, save, split_chunks, vocab_size, Normalize, TokenizerSpec,
};
use wgformer::train::LrSchedule;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn docs(text: &str) -> Vec<String> {
    vec![text.to_string()]
}

#[test]
fn char_tokenizer_is_sorted_characters_and_round_trips() {
    let text = &TINY_SHAKESPEARE[..100_000];
    let tok = build(&TokenizerSpec::Char, Normalize::default(), &docs(text)).unwrap();
    let mut chars: Vec<char> = text.chars().collect();
    chars.sort();
    chars.dedup();
    assert_eq!(vocab_size(&tok), chars.len());
    let ids = encode_text(&tok, "First Citizen:\n").unwrap();
    assert_eq!(ids.len(), 15);
    assert_eq!(ids[0], chars.iter().position(|&c| c == 'F').unwrap() as u32);
    assert_eq!(decode(&tok, &ids).unwrap(), "First Citizen:\n");
    let all = encode_text(&tok, text).unwrap();
    assert_eq!(all.len(), text.chars().count());
    assert_eq!(decode(&tok, &all).unwrap(), text);
    // The whole of tiny Shakespeare has nanoGPT's 65 characters.
    let full = build(
        &TokenizerSpec::Char,
        Normalize::default(),
        &docs(TINY_SHAKESPEARE),
    )
    .unwrap();
    assert_eq!(vocab_size(&full), 65);
    assert_eq!(eot_id(&full), None);
    // Characters outside the vocabulary are named, not dropped.
    let err = encode_text(&tok, "naïve ✓").unwrap_err().to_string();
    assert!(err.contains("'ï'") && err.contains("'✓'"), "{err}");
}

#[test]
fn byte_tokenizer_has_256_tokens_and_round_trips_any_text() {
    let tok = build(&TokenizerSpec::Byte, Normalize::default(), &[]).unwrap();
    assert_eq!(vocab_size(&tok), 256);
    let text = "héllo ✓\n\ttabs  and  spaces";
    let ids = encode_text(&tok, text).unwrap();
    assert_eq!(ids, text.bytes().map(|b| b as u32).collect::<Vec<_>>());
    assert_eq!(decode(&tok, &ids).unwrap(), text);
}

#[test]
fn gpt2_and_trained_bpe_round_trip() {
    let text = &TINY_SHAKESPEARE[..50_000];
    let gpt2 = build(&TokenizerSpec::Gpt2, Normalize::default(), &[]).unwrap();
    assert_eq!(vocab_size(&gpt2), 50257);
    assert_eq!(eot_id(&gpt2), Some(50256));
    let ids = encode_text(&gpt2, "Hello world").unwrap();
    assert_eq!(ids, vec![15496, 995]);
    // Encoding piece by piece (as the token cache does) gives the ids of the whole.
    let whole = gpt2.encode(text, false).unwrap().get_ids().to_vec();
    assert_eq!(encode_text(&gpt2, text).unwrap(), whole);
    assert!(split_chunks(text, 1000).count() > 10);
    assert_eq!(split_chunks(text, 1000).collect::<String>(), text);

    let bpe = build(&TokenizerSpec::Bpe(400), Normalize::default(), &docs(text)).unwrap();
    let v = vocab_size(&bpe);
    assert!((300..=400).contains(&v), "trained vocabulary {v}");
    assert!(eot_id(&bpe).is_some());
    let ids = encode_text(&bpe, text).unwrap();
    assert!(
        ids.len() < text.len() * 3 / 4,
        "{} ids for {} bytes",
        ids.len(),
        text.len()
    );
    assert_eq!(decode(&bpe, &ids).unwrap(), text);
    // Saved and loaded back as a tokenizer.json, it encodes the same way.
    let dir = scratch("bpe");
    let path = dir.join("tokenizer.json");
    save(&bpe, &path).unwrap();
    let spec: TokenizerSpec = path.to_str().unwrap().parse().unwrap();
    let again = build(&spec, Normalize::default(), &[]).unwrap();
    assert_eq!(encode_text(&again, text).unwrap(), ids);
    // A given tokenizer.json keeps its own normalizer.
    let lower: Normalize = "lowercase".parse().unwrap();
    assert!(build(&spec, lower, &[]).is_err());
}

/// `bpe:N` is a function of the corpus: pairs seen equally often are merged in the
/// order of their tokens' ids (byte order), whatever order the words come in, and
/// training again (with fresh hash seeds: each map draws its own) gives the same
/// tokenizer.
#[test]
fn trained_bpe_breaks_ties_by_token_order_every_time() {
    // "q z" and "y x" are each seen twice; 256 bytes + <|endoftext|> + 1 merge = 258.
    let merges = |corpus: &str, size: usize| {
        let tok = build(
            &TokenizerSpec::Bpe(size),
            Normalize::default(),
            &docs(corpus),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        let merges: Vec<String> = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| match m {
                serde_json::Value::Array(pair) => format!("{} {}", pair[0], pair[1]),
                other => other.to_string(),
            })
            .collect();
        (merges, tok.to_string(false).unwrap())
    };
    let (first, json) = merges("yx\nqz\nyx\nqz\n", 258);
    assert_eq!(
        first,
        vec![r#""q" "z""#.to_string()],
        "the lower pair wins the tie"
    );
    for corpus in ["qz\nqz\nyx\nyx\n", "yx\nyx\nqz\nqz\n", "yx\nqz\nyx\nqz\n"] {
        let (m, j) = merges(corpus, 258);
        assert_eq!(m, first, "{corpus:?}");
        assert_eq!(j, json, "{corpus:?}: the same tokenizer");
    }
    let (both, _) = merges("yx\nqz\nyx\nqz\n", 259);
    assert_eq!(
        both,
        vec![r#""q" "z""#.to_string(), r#""y" "x""#.to_string()]
    );
    // A real corpus, many ties among its rarer pairs: the same tokenizer each time.
    let text = &TINY_SHAKESPEARE[..50_000];
    let once = build(&TokenizerSpec::Bpe(1000), Normalize::default(), &docs(text)).unwrap();
    for _ in 0..2 {
        let again = build(&TokenizerSpec::Bpe(1000), Normalize::default(), &docs(text)).unwrap();
        assert_eq!(
            again.to_string(false).unwrap(),
            once.to_string(false).unwrap()
        );
    }
}

#[test]
fn normalization_is_part_of_the_tokenizer() {
    let norm: Normalize = "nfkc,lowercase".parse().unwrap();
    let tok = build(&TokenizerSpec::Char, norm, &docs("ＡＢＣ abc Ǆ")).unwrap();
    // NFKC folds the full-width letters and the ligature; lowercase folds case.
    assert_eq!(vocab_size(&tok), 6, "a b c d ž and space");
    let ids = encode_text(&tok, "ＡBc").unwrap();
    assert_eq!(decode(&tok, &ids).unwrap(), "abc");
    assert!("nfc,nfkc".parse::<Normalize>().is_err());
    assert!("none".parse::<Normalize>().unwrap().is_none());
}

#[test]
fn corpora_from_directories_and_jsonl() {
    let dir = scratch("corpus");
    let sub = dir.join("texts");
    std::fs::create_dir_all(sub.join("deeper")).unwrap();
    std::fs::write(sub.join("b.txt"), "second file\n").unwrap();
    std::fs::write(sub.join("a.md"), "first file\n").unwrap();
    std::fs::write(
        sub.join("deeper/c.jsonl"),
        "{\"text\": \"json one\"}\n\n{\"text\": \"json two\"}\n",
    )
    .unwrap();
    std::fs::write(sub.join(".hidden.txt"), "skipped\n").unwrap();
    std::fs::write(sub.join("image.png"), [0xff, 0xd8]).unwrap();
    let c = Corpus::read(&sub).unwrap();
    assert_eq!(
        c.docs,
        ["first file\n", "second file\n", "json one", "json two"]
    );
    // Documents are separated by <|endoftext|> where the vocabulary has it.
    let gpt2 = build(&TokenizerSpec::Gpt2, Normalize::default(), &[]).unwrap();
    let (cache, _) = TokenCache::build_or_load(&dir, &c, &gpt2, 0.0).unwrap();
    assert_eq!(cache.tokens.iter().filter(|&&t| t == 50256).count(), 3);
    assert_eq!(cache.meta.dtype, "u16", "GPT-2's 50257 ids fit in u16");
}

#[test]
fn token_cache_is_reused_only_for_the_same_corpus_and_tokenizer() {
    let dir = scratch("cache");
    let text = &TINY_SHAKESPEARE[..20_000];
    let corpus = Corpus {
        docs: docs(text),
        source: "test".into(),
    };
    let tok = build(&TokenizerSpec::Char, Normalize::default(), &corpus.docs).unwrap();
    let (a, reused) = TokenCache::build_or_load(&dir, &corpus, &tok, 0.1).unwrap();
    assert!(!reused);
    assert_eq!(a.meta.dtype, "u16");
    assert_eq!(
        std::fs::metadata(dir.join("tokens.bin")).unwrap().len(),
        2 * 20_000
    );
    assert_eq!(a.train().len(), 18_000);
    assert_eq!(a.val().len(), 2_000);
    let (b, reused) = TokenCache::build_or_load(&dir, &corpus, &tok, 0.1).unwrap();
    assert!(reused);
    assert_eq!(a.tokens, b.tokens);
    let other = Corpus {
        docs: docs(&TINY_SHAKESPEARE[..21_000]),
        source: "test".into(),
    };
    let (c, reused) = TokenCache::build_or_load(&dir, &other, &tok, 0.1).unwrap();
    assert!(!reused);
    assert_eq!(c.tokens.len(), 21_000);
    assert_eq!(TokenCache::load(&dir).unwrap().tokens, c.tokens);
}

#[test]
fn pretraining_batches_are_functions_of_seed_and_step() {
    let data: Vec<u32> = (0..1000).collect();
    let b = TextBatches {
        train: data[..900].to_vec(),
        val: data[900..].to_vec(),
        seed: 5,
    };
    let x = b.train(7, 4, 16);
    assert_eq!((x.x.len(), x.y.len()), (64, 64));
    for (row_x, row_y) in x.x.chunks(16).zip(x.y.chunks(16)) {
        for i in 0..16 {
            assert_eq!(row_y[i], row_x[i] + 1, "targets are the next tokens");
        }
        assert!(row_y[15] < 900, "rows stay in the training split");
    }
    assert_eq!(b.train(7, 4, 16).x, x.x, "same step, same batch");
    assert_ne!(b.train(8, 4, 16).x, x.x);
    let other_seed = TextBatches {
        train: b.train.clone(),
        val: b.val.clone(),
        seed: 6,
    };
    assert_ne!(other_seed.train(7, 4, 16).x, x.x);
    let e1 = b.eval(3, 2, 16);
    let e2 = b.eval(3, 2, 16);
    assert_eq!(e1.len(), 3);
    assert!(e1.iter().zip(&e2).all(|(p, q)| p.x == q.x && p.y == q.y));
    assert!(
        e1.iter().all(|e| e.x.iter().all(|&t| t >= 900)),
        "from validation"
    );
}

fn write_jsonl(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("pairs.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

#[test]
fn finetuning_rows_count_completions_only() {
    let dir = scratch("sft");
    let tok = build(
        &TokenizerSpec::Char,
        Normalize::default(),
        &docs("abcdefgh:->\n "),
    )
    .unwrap();
    let id = |s: &str| encode_text(&tok, s).unwrap();
    let path = write_jsonl(
        &dir,
        &[
            r#"{"prompt": "ab:", "completion": "cd\n"}"#,
            "",
            r#"{"prompt": "efg:", "completion": "h\n"}"#,
        ],
    );
    let ex = read_examples(&path, &tok).unwrap();
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].prompt, id("ab:"));
    assert_eq!(
        ex[0].completion,
        id("cd\n"),
        "no <|endoftext|> in a char vocabulary"
    );
    // Padded: one example per row of T = 8.
    let rows = SftBatches::new(&ex, &[], 8, false, 1, "pairs").unwrap();
    let e = rows.eval(4, 2, 8);
    assert_eq!(e.len(), 1);
    let (x, y) = (&e[0].x[..8], &e[0].y[..8]);
    let all: Vec<i32> = id("ab:cd\n").iter().map(|&t| t as i32).collect();
    assert_eq!(&x[..5], &all[..5]);
    assert_eq!(&x[5..], &[0, 0, 0], "padding");
    let i = IGNORE_INDEX;
    assert_eq!(y, &[i, i, all[3], all[4], all[5], i, i, i]);
    assert_eq!(rows.train_targets(), 3 + 2);
    // Packed: both examples in one row of T = 12.
    let packed = SftBatches::new(&ex, &[], 12, true, 1, "pairs").unwrap();
    let e = packed.eval(4, 1, 12);
    assert_eq!(e.len(), 1);
    let counted = e[0].y.iter().filter(|&&v| v != IGNORE_INDEX).count();
    assert_eq!(counted, 5);
    // Every epoch visits every row once, in a seeded order.
    let four: Vec<_> = (0..4).flat_map(|_| ex.clone()).collect();
    let b = SftBatches::new(&four, &[], 8, false, 3, "pairs").unwrap();
    let epoch: Vec<Vec<i32>> = (0..8).map(|s| b.train(s, 1, 8).x).collect();
    assert_eq!(epoch.iter().filter(|x| x[0] == all[0]).count(), 4);
    // An example longer than T + 1 is an error naming it.
    let err = SftBatches::new(&ex, &[], 4, false, 1, "pairs.jsonl")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pairs.jsonl") && err.contains("example 1") && err.contains("--block-size 4"),
        "{err}"
    );
    // Bad lines are errors naming the line.
    let bad = write_jsonl(
        &dir,
        &[
            r#"{"prompt": "ab:", "completion": "cd"}"#,
            r#"{"prompt": "ab:"}"#,
        ],
    );
    let err = read_examples(&bad, &tok).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("completion"),
        "{err}"
    );
    let empty = write_jsonl(&dir, &[r#"{"prompt": "ab:", "completion": ""}"#]);
    let err = read_examples(&empty, &tok).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("empty"), "{err}");
    let unknown = write_jsonl(&dir, &[r#"{"prompt": "xyz:", "completion": "a"}"#]);
    let err = read_examples(&unknown, &tok).unwrap_err().to_string();
    assert!(err.contains("line 1") && err.contains("'x'"), "{err}");
}

#[test]
fn learning_rate_schedule_is_nanogpts() {
    let s = LrSchedule {
        lr: 1e-3,
        min_lr: 1e-4,
        warmup_steps: 100,
        decay_steps: 2000,
    };
    // Warmup: lr · (it + 1) / (warmup + 1).
    assert!((s.at(0) - 1e-3 / 101.0).abs() < 1e-9);
    assert!((s.at(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-9);
    assert_eq!(s.at(100), 1e-3);
    // Half-way through the decay: the mean of lr and min_lr.
    assert!((s.at(1050) - 5.5e-4).abs() < 1e-9);
    assert!((s.at(2000) - 1e-4).abs() < 1e-9);
    assert_eq!(s.at(2001), 1e-4);
    assert_eq!(s.at(10_000), 1e-4);
    for it in 100..2000 {
        assert!(s.at(it + 1) <= s.at(it));
    }
    assert_eq!(LrSchedule::constant(3e-4).at(0), 3e-4);
    assert_eq!(LrSchedule::constant(3e-4).at(500), 3e-4);
}

#[test]
fn metrics_log_resumes_at_the_checkpoint_and_plots() {
    let dir = scratch("metrics");
    let path = dir.join("metrics.jsonl");
    let mut m = Metrics::open(&path, None).unwrap();
    for step in 1..=10u64 {
        m.push(Record::Train {
            step,
            loss: 4.0 / step as f32,
            lr: 1e-3,
            tokens_per_s: 100.0,
            elapsed_s: step as f64,
        })
        .unwrap();
        if step % 5 == 0 {
            m.push(Record::Eval {
                step,
                val_loss: 4.5 / step as f32,
                train_loss: Some(1.0),
                elapsed_s: step as f64,
            })
            .unwrap();
        }
    }
    assert_eq!(Metrics::read(&path).unwrap(), m.records);
    // f32 losses survive the round trip bit for bit.
    let again = Metrics::read(&path).unwrap();
    assert!(
        matches!(again[2], Record::Train { loss, .. } if loss.to_bits() == (4.0f32 / 3.0).to_bits())
    );
    m.plot(&dir.join("loss.svg"), "test run").unwrap();
    let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("test run") && svg.contains("validation"));
    let mean = m.train_mean_since(8).unwrap();
    assert!((mean - (4.0 / 9.0 + 4.0 / 10.0) / 2.0).abs() < 1e-6);
    drop(m);
    // Resuming from a checkpoint at step 5 drops what was logged after it.
    let m = Metrics::open(&path, Some(5)).unwrap();
    assert_eq!(m.records.len(), 6);
    assert_eq!(Metrics::read(&path).unwrap().len(), 6);
    // A fresh run starts an empty log.
    let m = Metrics::open(&path, None).unwrap();
    assert!(m.records.is_empty());
    assert!(Metrics::read(&path).unwrap().is_empty());
}

#[test]
fn a_crash_between_checkpoint_renames_leaves_a_complete_checkpoint() {
    let dir = scratch("crash");
    let ck = dir.join("checkpoint");
    let complete = |d: &Path| {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        std::fs::write(d.join("model.safetensors"), "x").unwrap();
    };
    // Saving renames checkpoint → checkpoint.old, then checkpoint.tmp → checkpoint; a
    // crash in between leaves .old (complete) and .tmp (maybe complete).
    complete(&dir.join("checkpoint.old"));
    std::fs::create_dir_all(dir.join("checkpoint.tmp")).unwrap();
    assert_eq!(find_checkpoint(&ck), Some(dir.join("checkpoint.old")));
    complete(&ck);
    assert_eq!(find_checkpoint(&ck), Some(ck.clone()));
    std::fs::remove_file(ck.join("model.safetensors")).unwrap();
    std::fs::remove_dir_all(dir.join("checkpoint.old")).unwrap();
    assert_eq!(find_checkpoint(&ck), None);
}
