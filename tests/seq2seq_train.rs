//! `wgformer train --arch seq2seq` and `wgformer translate` end to end at toy sizes: a
//! short run on a generated task must learn it (CI's short version of the learning
//! demonstration in BENCHMARKS.md), resume is bit-exact (with gradient accumulation),
//! separate tokenizers work, the CLI translates from --text and from stdin, and bad
//! flags or data are refused with a message naming them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use wgformer::gpu::{GpuContext, Needs};
use wgformer::testing::{same_bits, test_contexts};
use wgformer::train::metrics::{Metrics, Record};
use wgformer::train::seq2seq::{train_seq2seq, Seq2seqOutcome};
use wgformer::train::tasks::{generate, write_pairs, Task};
use wgformer::train::Silent;

fn contexts() -> &'static [GpuContext] {
    static CTX: OnceLock<Vec<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| test_contexts(&Needs::default()))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-s2s-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pairs_file(dir: &Path, task: Task, n: usize, max_len: usize, alphabet: usize) -> PathBuf {
    let p = dir.join(format!("{task}.jsonl"));
    write_pairs(&p, &generate(task, n, 2, max_len, alphabet, 7).unwrap()).unwrap();
    p
}

fn run(ctx: &GpuContext, flags: &[&str], stop_at: Option<u64>) -> Seq2seqOutcome {
    let args = wgformer::cli::train::parse(flags).unwrap();
    let plan = wgformer::cli::seq2seq::plan(&args).unwrap();
    ctx.block_on(train_seq2seq(ctx, plan, stop_at, &mut Silent))
        .unwrap()
}

fn plan_error(flags: &[&str]) -> String {
    let args = wgformer::cli::train::parse(flags).unwrap();
    match wgformer::cli::seq2seq::plan(&args) {
        Ok(_) => panic!("{flags:?} planned without error"),
        Err(e) => e.to_string(),
    }
}

/// The short version of the learning demonstration: reversing strings of 2–6 letters
/// from a 6-letter alphabet, learned from scratch; greedy decoding of held-out pairs
/// must be exactly right for at least 95 % of them. On the first adapter only (a
/// training run on each would double the suite's longest test).
#[test]
fn short_run_learns_to_reverse() {
    let ctx = &contexts()[0];
    let dir = scratch("learn");
    let data = pairs_file(&dir, Task::Reverse, 3000, 6, 6);
    let out = dir.join("run");
    let o = run(
        ctx,
        &[
            "--arch",
            "seq2seq",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--n-embd",
            "32",
            "--n-head",
            "4",
            "--n-layer",
            "1",
            "--batch-size",
            "32",
            "--steps",
            "400",
            "--lr",
            "3e-3",
            "--warmup-steps",
            "20",
            "--eval-every",
            "0",
            "--eval-batches",
            "2",
            "--val-fraction",
            "0.1",
        ],
        None,
    );
    let (ok, n) = o.exact_match;
    eprintln!(
        "{}: exact match {ok}/{n}, final loss {:?}",
        ctx.adapter_name(),
        o.losses.last()
    );
    assert_eq!(n, 300, "every held-out pair is decoded");
    assert!(
        ok as f64 >= 0.95 * n as f64,
        "exact match {ok}/{n} is below 95 %"
    );
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint/model.safetensors")).unwrap()
}

fn train_losses(dir: &Path) -> Vec<(u64, f32)> {
    Metrics::read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn resume_is_bit_exact_with_accumulation_and_separate_tokenizers() {
    for ctx in contexts() {
        let dir = scratch("resume");
        let data = pairs_file(&dir, Task::Sort, 200, 5, 8);
        let flags = |out: &Path| {
            vec![
                "--arch".to_string(),
                "seq2seq".into(),
                "--data".into(),
                data.display().to_string(),
                "--out".into(),
                out.display().to_string(),
                "--n-embd".into(),
                "24".into(),
                "--n-head".into(),
                "2".into(),
                "--encoder-layers".into(),
                "1".into(),
                "--decoder-layers".into(),
                "2".into(),
                "--ffn".into(),
                "40".into(),
                "--batch-size".into(),
                "4".into(),
                "--grad-accum".into(),
                "2".into(),
                "--dropout".into(),
                "0.1".into(),
                "--steps".into(),
                "6".into(),
                "--eval-every".into(),
                "2".into(),
                "--eval-batches".into(),
                "2".into(),
                "--target-tokenizer".into(),
                "char".into(),
            ]
        };
        let straight = dir.join("straight");
        let f: Vec<String> = flags(&straight);
        let a = run(ctx, &f.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let split = dir.join("split");
        let f: Vec<String> = flags(&split);
        run(
            ctx,
            &f.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(3),
        );
        let resumed = ["--resume", "--out", split.to_str().unwrap()];
        let b = run(ctx, &resumed, None);
        assert_eq!(a.state.step, 6);
        assert_eq!(b.state.step, 6);
        let (la, lb) = (train_losses(&straight), train_losses(&split));
        assert_eq!(la.len(), 6);
        let (va, vb): (Vec<f32>, Vec<f32>) = (
            la.iter().map(|x| x.1).collect(),
            lb.iter().map(|x| x.1).collect(),
        );
        assert!(
            same_bits(&va, &vb),
            "{}: losses {la:?} vs {lb:?}",
            ctx.adapter_name()
        );
        assert_eq!(weights(&straight), weights(&split), "weights after resume");
        assert!(
            split.join("source_tokenizer.json").is_file()
                && split.join("target_tokenizer.json").is_file()
        );
        assert!(split.join("loss.svg").is_file());
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgformer"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

#[test]
fn cli_trains_and_translates_from_text_and_stdin() {
    let dir = scratch("cli");
    let data = dir.join("copy.jsonl");
    let st = bin()
        .args([
            "make-pairs",
            "--task",
            "copy",
            "--n",
            "100",
            "--max-len",
            "4",
            "--alphabet",
            "5",
            "--out",
        ])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.join("run");
    let o = bin()
        .args(["train", "--arch", "seq2seq", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args([
            "--n-embd",
            "16",
            "--n-head",
            "2",
            "--n-layer",
            "1",
            "--steps",
            "3",
            "--batch-size",
            "4",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("exact match (greedy) on 10 held-out pairs"),
        "{text}"
    );
    let o = bin()
        .args(["translate", "--model"])
        .arg(&out)
        .args(["--text", "abc", "--text", "de", "--beam", "3", "--scores"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains('\t')), "{lines:?}");
    let mut child = bin()
        .args(["translate", "--model"])
        .arg(&out)
        .args(["--batch", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ab\nbcd\n\ne\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        3,
        "one line per non-empty input"
    );
    // A character the tokenizer never saw is named.
    let o = bin()
        .args(["translate", "--model"])
        .arg(&out)
        .args(["--text", "xyz"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn bad_flags_and_data_are_refused_with_their_names() {
    let dir = scratch("errors");
    let data = pairs_file(&dir, Task::Copy, 20, 3, 3);
    let d = data.to_str().unwrap();
    let o = |name: &str| dir.join(name).display().to_string();
    assert!(plan_error(&["--arch", "seq2seq", "--out", &o("a")]).contains("--data"));
    assert!(plan_error(&[
        "--arch",
        "seq2seq",
        "--data",
        d,
        "--out",
        &o("b"),
        "--dropout",
        "1.5"
    ])
    .contains("--dropout"));
    assert!(plan_error(&[
        "--arch",
        "seq2seq",
        "--data",
        d,
        "--out",
        &o("c"),
        "--preset",
        "baby"
    ])
    .contains("--preset"));
    assert!(plan_error(&[
        "--arch",
        "seq2seq",
        "--data",
        d,
        "--out",
        &o("d"),
        "--n-embd",
        "30",
        "--n-head",
        "4"
    ])
    .contains("heads"));
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"source\": \"ab\", \"target\": \"ba\"}\n{\"source\": \"ab\"}\n",
    )
    .unwrap();
    let err = plan_error(&[
        "--arch",
        "seq2seq",
        "--data",
        bad.to_str().unwrap(),
        "--out",
        &o("e"),
    ]);
    assert!(err.contains("bad.jsonl") && err.contains('2'), "{err}");
    let err = wgformer::cli::train::run(
        &wgformer::gpu::GpuOptions::default(),
        wgformer::cli::train::parse(&["--arch", "bert", "--out", &o("f")]).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--arch"), "{err}");
}
