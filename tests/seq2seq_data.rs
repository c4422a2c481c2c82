//! The CPU side of seq2seq training, no GPU needed: reading source → target JSONL and its
//! errors, tokenizers with `<pad>`, `<s>`, `</s>` (char at ids 0, 1, 2; byte with
//! specials appended), tokenized pairs, the exact layout of a batch (padding, the -100
//! targets, empty rows of a short batch), the train/validation split, batches as a pure
//! function of (seed, step) visiting each pair once per epoch, stable evaluation batches,
//! and the generated toy tasks.

use std::collections::HashMap;
use std::path::PathBuf;

use wgformer::kernels::crossentropy::IGNORE_INDEX;
use wgformer::train::pairs::{
    build_tokenizer, decode, make_batch, read_pairs, special_ids, tokenize_pairs, Pair,
    PairBatches, PairText, SpecialIds, BOS, EOS, MAX_EVAL_BATCHES, PAD,
};
use wgformer::train::tasks::{generate, write_pairs, Task};
use wgformer::train::tokenize::{encode_text, save, vocab_size, Normalize, TokenizerSpec};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-s2s-{name}-{}", std::process::id()));
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

const IDS: SpecialIds = SpecialIds {
    pad: 0,
    bos: 1,
    eos: 2,
};

fn pair(source: &[u32], target: &[u32]) -> Pair {
    Pair {
        source: source.to_vec(),
        target: target.to_vec(),
    }
}

#[test]
fn read_pairs_reads_and_names_bad_lines() {
    let d = scratch("read");
    let f = d.join("pairs.jsonl");
    std::fs::write(
        &f,
        concat!(
            "{\"source\": \"abc\", \"target\": \"cba\"}\n\n  \n",
            "{\"target\": \"\", \"source\": \"x\", \"note\": 1}\n"
        ),
    )
    .unwrap();
    let p = read_pairs(&f).unwrap();
    assert_eq!(
        p,
        vec![
            PairText {
                source: "abc".into(),
                target: "cba".into()
            },
            PairText {
                source: "x".into(),
                target: "".into()
            }
        ]
    );

    let cases = [
        (
            "{\"source\": \"a\", \"target\": \"b\"}\n{oops\n",
            "line 2",
            "not JSON",
        ),
        (
            "\n{\"source\": \"a\"}\n",
            "line 2",
            "missing the \"target\"",
        ),
        (
            "{\"source\": 3, \"target\": \"b\"}\n",
            "line 1",
            "\"source\" is a number",
        ),
        ("[\"a\", \"b\"]\n", "line 1", "found an array"),
    ];
    for (text, line, what) in cases {
        std::fs::write(&f, text).unwrap();
        let e = err_of(read_pairs(&f));
        assert!(e.contains("pairs.jsonl") && e.contains(line), "{e}");
        assert!(e.contains(what), "{what:?} not in {e}");
    }

    std::fs::write(&f, "\n \n").unwrap();
    let e = err_of(read_pairs(&f));
    assert!(e.contains("pairs.jsonl") && e.contains("no pairs"), "{e}");
    std::fs::write(&f, "").unwrap();
    assert!(err_of(read_pairs(&f)).contains("no pairs"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn char_tokenizer_has_specials_first_and_round_trips() {
    let docs = vec!["hello world".to_string(), "dlrow olleh!".to_string()];
    let tok = build_tokenizer(&TokenizerSpec::Char, Normalize::default(), &docs).unwrap();
    assert_eq!(special_ids(&tok, "test").unwrap(), IDS);
    // Specials, then the 9 distinct characters " !dehlorw" in code-point order.
    assert_eq!(vocab_size(&tok), 3 + 9);
    assert_eq!(tok.token_to_id(" "), Some(3));
    assert_eq!(tok.token_to_id("!"), Some(4));
    assert_eq!(tok.token_to_id("w"), Some(11));
    let ids = encode_text(&tok, "hello world").unwrap();
    assert_eq!(ids.len(), 11);
    assert!(ids.iter().all(|&i| i >= 3));
    assert_eq!(decode(&tok, &ids).unwrap(), "hello world");
    let mut with_specials = vec![1];
    with_specials.extend(&ids);
    with_specials.extend([2, 0, 0]);
    assert_eq!(decode(&tok, &with_specials).unwrap(), "hello world");
    // Unknown characters are still an error naming them.
    let e = err_of(encode_text(&tok, "hex"));
    assert!(e.contains("'x'"), "{e}");

    // Saved and loaded, the specials keep their ids and stay special.
    let d = scratch("char");
    let f = d.join("tokenizer.json");
    save(&tok, &f).unwrap();
    let back = wgformer::tokenizer::load(&f).unwrap();
    assert_eq!(special_ids(&back, "loaded").unwrap(), IDS);
    assert_eq!(encode_text(&back, "hello world").unwrap(), ids);
    assert_eq!(decode(&back, &with_specials).unwrap(), "hello world");
    // A tokenizer.json that has the specials keeps their ids.
    let file = TokenizerSpec::File(f.clone());
    let again = build_tokenizer(&file, Normalize::default(), &[]).unwrap();
    assert_eq!(special_ids(&again, "file").unwrap(), IDS);
    assert_eq!(vocab_size(&again), 12);
    let _ = std::fs::remove_dir_all(&d);

    // Normalization is kept: lowercase maps 'H' onto 'h'.
    let lower = Normalize {
        lowercase: true,
        ..Normalize::default()
    };
    let tok = build_tokenizer(&TokenizerSpec::Char, lower, &["Hi".to_string()]).unwrap();
    assert_eq!(vocab_size(&tok), 5);
    assert_eq!(encode_text(&tok, "HI").unwrap(), vec![3, 4]);
}

#[test]
fn byte_tokenizer_gets_specials_and_special_ids_finds_them() {
    let tok = build_tokenizer(&TokenizerSpec::Byte, Normalize::default(), &[]).unwrap();
    let ids = special_ids(&tok, "byte").unwrap();
    assert_eq!(
        ids,
        SpecialIds {
            pad: 256,
            bos: 257,
            eos: 258
        }
    );
    assert_eq!(vocab_size(&tok), 259);
    let text = "héllo, wörld";
    let enc = encode_text(&tok, text).unwrap();
    assert_eq!(enc.len(), text.len());
    let mut all = vec![ids.bos];
    all.extend(&enc);
    all.push(ids.eos);
    assert_eq!(decode(&tok, &all).unwrap(), text);

    // A tokenizer without them is an error naming where it came from.
    let plain =
        wgformer::train::tokenize::build(&TokenizerSpec::Byte, Normalize::default(), &[]).unwrap();
    let e = err_of(special_ids(&plain, "model/tokenizer.json"));
    assert!(e.contains("model/tokenizer.json") && e.contains(PAD), "{e}");
}

#[test]
fn tokenize_pairs_checks_each_pair() {
    let docs = vec!["abc".to_string()];
    let tok = build_tokenizer(&TokenizerSpec::Char, Normalize::default(), &docs).unwrap();
    let texts = vec![
        PairText {
            source: "abc".into(),
            target: "cb".into(),
        },
        PairText {
            source: "a".into(),
            target: "".into(),
        },
    ];
    let p = tokenize_pairs(&texts, &tok, &tok, "pairs.jsonl").unwrap();
    assert_eq!(p, vec![pair(&[3, 4, 5], &[5, 4]), pair(&[3], &[])]);

    let bad = |source: &str, target: &str| {
        let mut t = texts.clone();
        t.push(PairText {
            source: source.into(),
            target: target.into(),
        });
        err_of(tokenize_pairs(&t, &tok, &tok, "pairs.jsonl"))
    };
    let e = bad("", "a");
    assert!(
        e.contains("pairs.jsonl") && e.contains("pair 3") && e.contains("source is empty"),
        "{e}"
    );
    let e = bad("abz", "a");
    assert!(
        e.contains("pair 3") && e.contains("source") && e.contains("'z'"),
        "{e}"
    );
    let e = bad("a", "b</s>");
    assert!(
        e.contains("pair 3") && e.contains("target") && e.contains(EOS),
        "{e}"
    );
    let e = bad("<s>a", "b");
    assert!(e.contains("source") && e.contains(BOS), "{e}");
}

#[test]
fn make_batch_layout() {
    let a = pair(&[5, 6, 7], &[8, 9]);
    let b = pair(&[10], &[]);
    let ids = SpecialIds {
        pad: 3,
        bos: 1,
        eos: 2,
    };
    // B = 3 rows, two pairs: the third row is all padding.
    let batch = make_batch(&[&a, &b], 3, 4, 3, ids);
    let x = IGNORE_INDEX;
    assert_eq!(batch.rows, 2);
    #[rustfmt::skip]
    assert_eq!(batch.src, vec![
        5, 6, 7, 3,
        10, 3, 3, 3,
        3, 3, 3, 3,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.src_pad, vec![
        0, 0, 0, 1,
        0, 1, 1, 1,
        1, 1, 1, 1,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.tgt_in, vec![
        1, 8, 9,
        1, 3, 3,
        3, 3, 3,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.tgt_out, vec![
        8, 9, 2,
        2, x, x,
        x, x, x,
    ]);
    assert_eq!(batch.targets(), 4);

    // No pairs at all: every row padding.
    let empty = make_batch(&[], 2, 2, 2, ids);
    assert_eq!(empty.rows, 0);
    assert!(empty.src_pad.iter().all(|&v| v == 1));
    assert!(empty.tgt_out.iter().all(|&v| v == IGNORE_INDEX));
}

#[test]
#[should_panic(expected = "make_batch")]
fn make_batch_refuses_a_target_without_room_for_eos() {
    let a = pair(&[5], &[8, 9]);
    make_batch(&[&a], 1, 1, 2, IDS);
}

/// `n` distinct pairs: pair i has source [3 + i % 50, 3 + i / 50] and target of length
/// i % 4, so any pair is recognised by its source.
fn numbered(n: usize) -> Vec<Pair> {
    (0..n)
        .map(|i| {
            let src = [3 + (i % 50) as u32, 3 + (i / 50) as u32];
            let tgt: Vec<u32> = (0..i % 4).map(|j| 3 + j as u32).collect();
            pair(&src, &tgt)
        })
        .collect()
}

fn sources(batch: &wgformer::train::pairs::Seq2seqBatch, s: usize) -> Vec<Vec<i32>> {
    batch.src.chunks(s).map(|r| r.to_vec()).collect()
}

#[test]
fn split_sizes_and_shapes() {
    let pb = PairBatches::new(numbered(100), 0.1, 7, IDS).unwrap();
    assert_eq!((pb.train.len(), pb.val.len()), (90, 10));
    assert_eq!((pb.s, pb.t), (2, 4));
    assert_eq!(
        pb.describe(),
        "90 training pairs, 10 validation pairs, source ≤ 2 tokens, target ≤ 3 tokens"
    );
    // Every pair lands in exactly one split, and the split depends on the seed.
    let mut all: Vec<Vec<u32>> = pb
        .train
        .iter()
        .chain(&pb.val)
        .map(|p| p.source.clone())
        .collect();
    all.sort();
    let mut want: Vec<Vec<u32>> = numbered(100).into_iter().map(|p| p.source).collect();
    want.sort();
    assert_eq!(all, want);
    let again = PairBatches::new(numbered(100), 0.1, 7, IDS).unwrap();
    assert_eq!(again.val, pb.val);
    let other = PairBatches::new(numbered(100), 0.1, 8, IDS).unwrap();
    assert_ne!(other.val, pb.val);

    // At least one validation pair when asked for any, none when not.
    let pb = PairBatches::new(numbered(3), 0.01, 1, IDS).unwrap();
    assert_eq!((pb.train.len(), pb.val.len()), (2, 1));
    let pb = PairBatches::new(numbered(1), 0.1, 1, IDS).unwrap();
    assert_eq!((pb.train.len(), pb.val.len()), (1, 0));
    assert!(pb.describe().contains("evaluating on the training pairs"));
    let pb = PairBatches::new(numbered(5), 0.0, 1, IDS).unwrap();
    assert_eq!((pb.train.len(), pb.val.len()), (5, 0));
    // Empty targets only: T = 1 (room for eos).
    let pb = PairBatches::new(vec![pair(&[4], &[]), pair(&[5], &[])], 0.0, 1, IDS).unwrap();
    assert_eq!((pb.s, pb.t), (1, 1));

    let e = err_of(PairBatches::new(numbered(2), 0.8, 1, IDS).map(|_| ()));
    assert!(e.contains("no training pair"), "{e}");
    assert!(err_of(PairBatches::new(vec![], 0.1, 1, IDS).map(|_| ())).contains("no pairs"));
    assert!(err_of(PairBatches::new(numbered(5), 1.0, 1, IDS).map(|_| ())).contains("[0, 1)"));
}

#[test]
fn train_batches_are_pure_and_visit_each_pair_once_per_epoch() {
    let pb = PairBatches::new(numbered(60), 0.0, 11, IDS).unwrap();
    let (rows, s) = (4, pb.s);
    // 60 pairs / 4 rows = 15 steps per epoch.
    let a = pb.train_batch(3, rows);
    let b = pb.train_batch(3, rows);
    assert_eq!(
        (a.src.clone(), a.tgt_in.clone()),
        (b.src.clone(), b.tgt_in.clone())
    );
    assert_eq!(a.tgt_out, b.tgt_out);
    assert_eq!(a.rows, rows);
    assert_ne!(pb.train_batch(4, rows).src, a.src);
    // A fresh PairBatches (a resumed run) draws the same batch, in any call order.
    let resumed = PairBatches::new(numbered(60), 0.0, 11, IDS).unwrap();
    let _ = resumed.train_batch(40, rows);
    assert_eq!(resumed.train_batch(3, rows).src, a.src);

    for epoch in 0..3u64 {
        let mut seen: HashMap<Vec<i32>, usize> = HashMap::new();
        for step in epoch * 15..(epoch + 1) * 15 {
            for r in sources(&pb.train_batch(step, rows), s) {
                *seen.entry(r).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), 60, "epoch {epoch}");
        assert!(seen.values().all(|&c| c == 1), "epoch {epoch}");
    }
    let order = |step| sources(&pb.train_batch(step, rows), s);
    assert_ne!(order(0), order(15), "epochs are shuffled anew");

    // Batches crossing an epoch boundary, and more rows than pairs, still visit in order.
    let pb = PairBatches::new(numbered(7), 0.0, 3, IDS).unwrap();
    let mut seen: HashMap<Vec<i32>, usize> = HashMap::new();
    for step in 0..7 {
        for r in sources(&pb.train_batch(step, 3), pb.s) {
            *seen.entry(r).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.values().all(|&c| c == 3));
    let big = pb.train_batch(0, 20);
    assert_eq!(big.src.len(), 20 * pb.s);
}

#[test]
fn eval_batches_are_stable() {
    let pb = PairBatches::new(numbered(100), 0.1, 5, IDS).unwrap();
    let e1 = pb.eval_batches(4);
    let e2 = pb.eval_batches(4);
    assert_eq!(e1.len(), 3);
    assert_eq!(e1.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![4, 4, 2]);
    for (a, b) in e1.iter().zip(&e2) {
        assert_eq!(
            (&a.src, &a.src_pad, &a.tgt_in, &a.tgt_out),
            (&b.src, &b.src_pad, &b.tgt_in, &b.tgt_out)
        );
    }
    // The validation pairs in order; the last batch's spare rows are padding.
    let got: Vec<Vec<i32>> = e1.iter().flat_map(|b| sources(b, pb.s)).take(10).collect();
    let want: Vec<Vec<i32>> = pb
        .val
        .iter()
        .map(|p| p.source.iter().map(|&v| v as i32).collect())
        .collect();
    assert_eq!(got, want);
    let last = &e1[2];
    assert!(last.src_pad[2 * pb.s..].iter().all(|&v| v == 1));
    assert!(last.tgt_out[2 * pb.t..].iter().all(|&v| v == IGNORE_INDEX));

    // No validation pairs: the training pairs; many pairs: capped.
    let pb = PairBatches::new(numbered(10), 0.0, 5, IDS).unwrap();
    let e = pb.eval_batches(4);
    assert_eq!(e.iter().map(|b| b.rows).sum::<usize>(), 10);
    let pb = PairBatches::new(numbered(1000), 0.5, 5, IDS).unwrap();
    assert_eq!(pb.eval_batches(2).len(), MAX_EVAL_BATCHES);
}

#[test]
fn tasks_generate_write_read_round_trip() {
    let p = generate(Task::Reverse, 200, 2, 6, 10, 42).unwrap();
    assert_eq!(p.len(), 200);
    for x in &p {
        assert!((2..=6).contains(&x.source.len()), "{x:?}");
        assert!(x.source.chars().all(|c| ('a'..='j').contains(&c)), "{x:?}");
        assert_eq!(x.target, x.source.chars().rev().collect::<String>());
    }
    let lens: std::collections::BTreeSet<usize> = p.iter().map(|x| x.source.len()).collect();
    assert_eq!(lens.len(), 5, "every length in 2..=6 appears");
    let letters: std::collections::BTreeSet<char> =
        p.iter().flat_map(|x| x.source.chars()).collect();
    assert_eq!(letters.len(), 10, "every letter of a..=j appears");

    let sorted = generate(Task::Sort, 50, 1, 8, 26, 1).unwrap();
    for x in &sorted {
        let mut c: Vec<char> = x.source.chars().collect();
        c.sort();
        assert_eq!(x.target, c.into_iter().collect::<String>());
        assert!(x.target.as_bytes().windows(2).all(|w| w[0] <= w[1]));
    }
    let copy = generate(Task::Copy, 20, 3, 3, 1, 9).unwrap();
    assert!(copy.iter().all(|x| x.source == "aaa" && x.target == "aaa"));

    // Deterministic by seed.
    assert_eq!(generate(Task::Reverse, 200, 2, 6, 10, 42).unwrap(), p);
    assert_ne!(generate(Task::Reverse, 200, 2, 6, 10, 43).unwrap(), p);

    let d = scratch("tasks");
    let f = d.join("reverse.jsonl");
    write_pairs(&f, &p).unwrap();
    assert_eq!(read_pairs(&f).unwrap(), p);
    let text = std::fs::read_to_string(&f).unwrap();
    assert_eq!(text.lines().count(), 200);
    assert!(text.starts_with("{\"source\":\""), "{text}");
    let _ = std::fs::remove_dir_all(&d);

    // From text to batches: the char tokenizer of the pairs, then PairBatches.
    let docs: Vec<String> = p
        .iter()
        .flat_map(|x| [x.source.clone(), x.target.clone()])
        .collect();
    let tok = build_tokenizer(&TokenizerSpec::Char, Normalize::default(), &docs).unwrap();
    assert_eq!(vocab_size(&tok), 13);
    let ids = special_ids(&tok, "reverse").unwrap();
    let pairs = tokenize_pairs(&p, &tok, &tok, "reverse.jsonl").unwrap();
    let pb = PairBatches::new(pairs, 0.1, 0, ids).unwrap();
    assert_eq!((pb.s, pb.t), (6, 7));
    let batch = pb.train_batch(0, 8);
    let row: Vec<u32> = batch.src[..6]
        .iter()
        .filter(|&&v| v != 0)
        .map(|&v| v as u32)
        .collect();
    let out: Vec<u32> = batch.tgt_out[..7]
        .iter()
        .filter(|&&v| v != IGNORE_INDEX)
        .map(|&v| v as u32)
        .collect();
    let source = decode(&tok, &row).unwrap();
    assert_eq!(
        decode(&tok, &out).unwrap(),
        source.chars().rev().collect::<String>()
    );
}

#[test]
fn task_arguments_are_checked() {
    assert_eq!("reverse".parse::<Task>().unwrap(), Task::Reverse);
    assert_eq!("sort".parse::<Task>().unwrap(), Task::Sort);
    assert_eq!("copy".parse::<Task>().unwrap(), Task::Copy);
    let e = err_of("rev".parse::<Task>());
    assert!(e.contains("reverse, sort, copy"), "{e}");
    assert!(err_of(generate(Task::Copy, 0, 1, 2, 5, 0)).contains("at least 1"));
    assert!(err_of(generate(Task::Copy, 5, 3, 2, 5, 0)).contains("exceeds"));
    assert!(err_of(generate(Task::Copy, 5, 0, 2, 5, 0)).contains("minimum length"));
    assert!(err_of(generate(Task::Copy, 5, 1, 2, 0, 0)).contains("1 to 26"));
    assert!(err_of(generate(Task::Copy, 5, 1, 2, 27, 0)).contains("1 to 26"));
}
