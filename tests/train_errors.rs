//! Bad input to `wgformer train` and `wgformer finetune` stops with a message that names
//! the flag or file and says what was expected, never a panic: an empty corpus, bytes that
//! are not UTF-8, a corpus shorter than one block, an unknown preset, conflicting flags,
//! missing and mismatched checkpoints, an unwritable output directory, bad values, and a
//! NaN/inf loss (which keeps the last good checkpoint).

use std::path::{Path, PathBuf};

use wgformer::gpu::Needs;
use wgformer::model::checkpoint::save_gpt2_safetensors;
use wgformer::model::gpt2::Gpt2;
use wgformer::model::params::init_params;
use wgformer::model::Gpt2Config;
use wgformer::testing::test_contexts;
use wgformer::train::data::TINY_SHAKESPEARE;
use wgformer::train::state::TrainerState;
use wgformer::train::{train, RunSpec, Silent};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-errors-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The error `wgformer train <flags>` stops with while planning (no GPU needed).
fn train_error(flags: &[&str]) -> String {
    let args = wgformer::cli::train::parse(flags).unwrap();
    match args.plan() {
        Ok(_) => panic!("wgformer train {flags:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn finetune_error(flags: &[&str]) -> String {
    let args = wgformer::cli::finetune::parse(flags).unwrap();
    match args.plan() {
        Ok(_) => panic!("wgformer finetune {flags:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error does not mention {w:?}: {err}");
    }
}

#[test]
fn empty_corpus_is_refused() {
    let dir = scratch("empty");
    let out = dir.join("run");
    for (name, bytes) in [("empty.txt", &b""[..]), ("blank.txt", &b" \n\n \n"[..])] {
        let data = write(&dir, name, bytes);
        let err = train_error(&[
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_mentions(&err, &[name, "empty"]);
    }
    let empty_dir = dir.join("nothing");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let err = train_error(&[
        "--data",
        empty_dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_mentions(&err, &["nothing", ".txt"]);
    let missing = dir.join("missing.txt");
    let err = train_error(&[
        "--data",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_mentions(&err, &["missing.txt"]);
}

#[test]
fn non_utf8_corpus_is_refused_with_its_position() {
    let dir = scratch("utf8");
    let data = write(&dir, "latin1.txt", b"hello\nwor\xe9ld\n");
    let err = train_error(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert_mentions(
        &err,
        &["latin1.txt", "not UTF-8", "0xe9", "byte offset 9", "line 2"],
    );
    // Inside a directory and in JSONL too.
    let sub = dir.join("corpus");
    std::fs::create_dir_all(&sub).unwrap();
    write(&sub, "a.txt", b"fine text\n");
    write(
        &sub,
        "b.jsonl",
        b"{\"text\": \"ok\"}\n{\"txt\": \"wrong field\"}\n",
    );
    let err = train_error(&[
        "--data",
        sub.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    assert_mentions(&err, &["b.jsonl line 2", "\"text\""]);
}

#[test]
fn corpus_shorter_than_a_block_is_refused() {
    let dir = scratch("short");
    let data = write(
        &dir,
        "short.txt",
        b"To be, or not to be, that is the question.\n",
    );
    let out = dir.join("run");
    let err = train_error(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--block-size",
        "64",
    ]);
    assert_mentions(&err, &["too short", "--block-size 64"]);
    // Long enough to train on, but not for the validation split.
    let data = write(&dir, "short2.txt", &TINY_SHAKESPEARE.as_bytes()[..400]);
    let err = train_error(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--block-size",
        "64",
        "--overwrite",
    ]);
    assert_mentions(&err, &["validation split", "--val-fraction"]);
}

#[test]
fn unknown_preset_and_bad_values_are_refused() {
    let dir = scratch("values");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let err = train_error(&["--preset", "gpt5", "--out", o]);
    assert_mentions(&err, &["--preset", "gpt5", "baby", "gpt2"]);
    let err = train_error(&["--n-embd", "30", "--n-head", "4", "--out", o, "--overwrite"]);
    assert_mentions(&err, &["n_embd (30)", "n_head (4)"]);
    let err = train_error(&["--tokenizer", "words", "--out", o]);
    assert_mentions(&err, &["--tokenizer", "char, byte, gpt2"]);
    let err = train_error(&["--tokenizer", "bpe:lots", "--out", o]);
    assert_mentions(&err, &["bpe:<vocabulary size>"]);
    let err = train_error(&["--normalize", "nfc,shout", "--out", o]);
    assert_mentions(&err, &["--normalize", "shout"]);
    let err = train_error(&["--lr", "0", "--out", o]);
    assert_mentions(&err, &["--lr"]);
    let err = train_error(&["--dropout", "1", "--out", o]);
    assert_mentions(&err, &["--dropout"]);
    let err = train_error(&["--val-fraction", "1.5", "--out", o]);
    assert_mentions(&err, &["--val-fraction"]);
    let err = train_error(&["--batch-size", "0", "--out", o]);
    assert_mentions(&err, &["--batch-size"]);
}

#[test]
fn conflicting_flags_are_refused_by_the_parser() {
    for flags in [
        &["--resume", "--lr", "1e-3"][..],
        &["--resume", "--data", "x.txt"],
        &["--resume", "--overwrite"],
        &["--init-from", "ckpt", "--n-layer", "2"],
        &["--init-from", "ckpt", "--tokenizer", "gpt2"],
        &["--init-from", "ckpt", "--preset", "baby"],
    ] {
        let err = wgformer::cli::train::parse(flags).err().unwrap();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{flags:?}"
        );
        assert!(err.to_string().contains("cannot be used with"), "{err}");
    }
    let err = wgformer::cli::finetune::parse(&["--resume", "--data", "x.jsonl"])
        .err()
        .unwrap();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    let err = wgformer::cli::finetune::parse(&["--data", "x.jsonl"])
        .err()
        .unwrap();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    assert!(err.to_string().contains("--init-from"));
}

/// A checkpoint directory with `cfg`'s weights (no GPU needed) and optionally a tokenizer.
fn fake_checkpoint(dir: &Path, cfg: &Gpt2Config, tokenizer_json: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    save_gpt2_safetensors(&dir.join("model.safetensors"), cfg, &init_params(cfg, 1)).unwrap();
    let json = serde_json::to_string_pretty(&cfg.to_hf_json()).unwrap();
    std::fs::write(dir.join("config.json"), json).unwrap();
    if let Some(t) = tokenizer_json {
        std::fs::write(dir.join("tokenizer.json"), t).unwrap();
    }
}

/// A character-level tokenizer.json over `text`.
fn char_tokenizer(text: &str) -> String {
    use wgformer::train::tokenize::{build, Normalize, TokenizerSpec};
    build(
        &TokenizerSpec::Char,
        Normalize::default(),
        &[text.to_string()],
    )
    .unwrap()
    .to_string(true)
    .unwrap()
}

#[test]
fn missing_and_mismatched_checkpoints_are_refused() {
    let dir = scratch("checkpoints");
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    // Missing.
    let missing = dir.join("no-such-model");
    let err = train_error(&["--init-from", missing.to_str().unwrap(), "--out", o]);
    assert_mentions(&err, &["--init-from", "no-such-model", "no such file"]);
    let not_ckpt = dir.join("not-a-model");
    std::fs::create_dir_all(&not_ckpt).unwrap();
    let err = finetune_error(&[
        "--init-from",
        not_ckpt.to_str().unwrap(),
        "--data",
        "x.jsonl",
        "--out",
        o,
    ]);
    assert_mentions(&err, &["not-a-model", "config.json", "model.safetensors"]);
    let err = train_error(&["--resume", "--out", not_ckpt.to_str().unwrap()]);
    assert_mentions(&err, &["--resume", "holds no run", "run.json"]);
    // A model without a tokenizer, whose vocabulary is not GPT-2's.
    let cfg = Gpt2Config::new(40, 16, 16, 1, 2);
    let bare = dir.join("bare");
    fake_checkpoint(&bare, &cfg, None);
    let err = finetune_error(&[
        "--init-from",
        bare.to_str().unwrap(),
        "--data",
        "x.jsonl",
        "--out",
        o,
    ]);
    assert_mentions(&err, &["bare", "no tokenizer.json"]);
    // A tokenizer with more tokens than the model has.
    let wide = dir.join("wide");
    let text: String = (b'!'..=b'~').map(|b| b as char).collect();
    fake_checkpoint(&wide, &cfg, Some(&char_tokenizer(&text)));
    let err = train_error(&["--init-from", wide.to_str().unwrap(), "--out", o]);
    assert_mentions(&err, &["94 tokens", "only 40", "do not belong together"]);
    // A resumable run whose checkpoint does not match its run.json.
    let ok = dir.join("ok");
    let cfg = Gpt2Config::new(65, 16, 16, 1, 2);
    fake_checkpoint(&ok, &cfg, Some(&char_tokenizer(&TINY_SHAKESPEARE[..5000])));
    let data = write(&dir, "text.txt", &TINY_SHAKESPEARE.as_bytes()[..5000]);
    let args = wgformer::cli::train::parse(&[
        "--init-from",
        ok.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        o,
        "--steps",
        "4",
        "--batch-size",
        "2",
    ])
    .unwrap();
    let plan = args.plan().unwrap();
    drop(plan);
    let other = Gpt2Config::new(65, 16, 16, 2, 2);
    fake_checkpoint(&out.join("checkpoint"), &other, None);
    std::fs::write(out.join("checkpoint/optimizer.safetensors"), b"x").unwrap();
    let state = TrainerState::fresh(1);
    std::fs::write(
        out.join("checkpoint/trainer.json"),
        serde_json::to_string(&state).unwrap(),
    )
    .unwrap();
    let plan = wgformer::cli::train::parse(&["--resume", "--out", o])
        .unwrap()
        .plan()
        .unwrap();
    // A pretraining run is not resumed as a fine-tuning run.
    let err = finetune_error(&["--resume", "--out", o]);
    assert_mentions(&err, &["pretraining run", "wgformer train --resume"]);
    let ctx = &test_contexts(&Needs::default())[0];
    let err = ctx
        .block_on(train(ctx, plan, None, &mut Silent))
        .err()
        .unwrap()
        .to_string();
    assert_mentions(&err, &["checkpoint", "differs from the run's model"]);
}

#[test]
fn unwritable_output_directory_is_refused() {
    let dir = scratch("unwritable");
    let file = write(&dir, "a-file", b"not a directory");
    let out = file.join("run");
    let err = train_error(&["--out", out.to_str().unwrap()]);
    assert_mentions(
        &err,
        &["--out", "a-file", "cannot create the run directory"],
    );
}

/// A loss that turns NaN or infinite stops the run with a message, and the checkpoint on
/// disk stays the last good one: here the learning rate of a resumed run is set absurdly
/// high in its run.json, so the step after the checkpoint blows the weights up.
#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let ctx = &test_contexts(&Needs::default())[0];
    let dir = scratch("nan");
    let data = write(&dir, "text.txt", &TINY_SHAKESPEARE.as_bytes()[..8000]);
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    #[rustfmt::skip]
    let flags = [
        "--data", data.to_str().unwrap(), "--out", o, "--steps", "6", "--eval-every", "1",
        "--eval-batches", "1", "--batch-size", "2", "--block-size", "16", "--n-layer", "1",
        "--n-head", "2", "--n-embd", "16", "--sample-tokens", "0",
    ];
    let plan = wgformer::cli::train::parse(&flags).unwrap().plan().unwrap();
    ctx.block_on(train(ctx, plan, Some(2), &mut Silent))
        .unwrap();
    let spec_path = out.join("run.json");
    let mut spec: RunSpec =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    spec.train.schedule.lr = 1e30;
    spec.train.schedule.min_lr = 1e30;
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let plan = wgformer::cli::train::parse(&["--resume", "--out", o])
        .unwrap()
        .plan()
        .unwrap();
    let err = ctx
        .block_on(train(ctx, plan, None, &mut Silent))
        .err()
        .unwrap()
        .to_string();
    eprintln!("{err}");
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert_mentions(&err, &["step 3", "last good checkpoint (step 2)", "--lr"]);
    let state = TrainerState::read(&out.join("checkpoint/trainer.json")).unwrap();
    assert_eq!(state.step, 2);
    let model = Gpt2::load(ctx, &out.join("checkpoint")).unwrap();
    let weights = ctx.block_on(model.params.read_all(ctx)).unwrap();
    assert!(weights.iter().flatten().all(|w| w.is_finite()));
}
