//! `wgformer train --arch bert --objective mlm` and `wgformer finetune --arch bert --task
//! classify` end to end at toy sizes (CI's check that both learn): a short masked-LM
//! pretraining on tiny Shakespeare lowers the validation loss; fine-tuning that model on
//! the shipped sentiment set reaches validation accuracy well above chance; resume is
//! bit-exact; `embed` prints vectors; wrong flags are refused with their names.

use std::path::{Path, PathBuf};
use std::process::Command;

use wgformer::gpu::{GpuContext, Needs};
use wgformer::testing::{same_bits, test_contexts};
use wgformer::train::bert::{train_bert, BertOutcome};
use wgformer::train::data::TINY_SHAKESPEARE;
use wgformer::train::metrics::{Metrics, Record};
use wgformer::train::Silent;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-bert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn corpus(dir: &Path, n: usize) -> PathBuf {
    let end = TINY_SHAKESPEARE[..n].rfind('\n').unwrap() + 1;
    let p = dir.join("text.txt");
    std::fs::write(&p, &TINY_SHAKESPEARE[..end]).unwrap();
    p
}

fn pretrain(ctx: &GpuContext, flags: &[&str], stop_at: Option<u64>) -> BertOutcome {
    let args = wgformer::cli::train::parse(flags).unwrap();
    let plan = wgformer::cli::bert::plan_pretraining(&args).unwrap();
    ctx.block_on(train_bert(ctx, plan, stop_at, &mut Silent))
        .unwrap()
}

fn finetune(ctx: &GpuContext, flags: &[&str]) -> BertOutcome {
    let args = wgformer::cli::finetune::parse(flags).unwrap();
    let plan = wgformer::cli::bert::plan_finetuning(&args).unwrap();
    ctx.block_on(train_bert(ctx, plan, None, &mut Silent))
        .unwrap()
}

fn evals(dir: &Path) -> Vec<f32> {
    Metrics::read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Eval { val_loss, .. } => Some(val_loss),
            _ => None,
        })
        .collect()
}

/// Masked-LM pretraining on the sentiment set's texts (its labels unused: the JSONL is
/// read as a corpus of {"text"} lines), then classification fine-tuning of the result on
/// the labels, on the first adapter only (two training runs on each adapter would double
/// the suite's longest test).
#[test]
fn pretraining_then_fine_tuning_learns() {
    let ctx = &test_contexts(&Needs::default())[0];
    let dir = scratch("learn");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/data/sentiment.jsonl");
    let mlm = dir.join("mlm");
    let o = pretrain(
        ctx,
        &[
            "--arch",
            "bert",
            "--objective",
            "mlm",
            "--data",
            data.to_str().unwrap(),
            "--out",
            mlm.to_str().unwrap(),
            "--tokenizer",
            "wordpiece:600",
            "--n-embd",
            "48",
            "--n-layer",
            "2",
            "--n-head",
            "4",
            "--block-size",
            "32",
            "--batch-size",
            "16",
            "--steps",
            "60",
            "--lr",
            "2e-3",
            "--warmup-steps",
            "10",
            "--eval-every",
            "30",
            "--eval-batches",
            "4",
        ],
        None,
    );
    let v = evals(&mlm);
    eprintln!("{}: masked-LM validation losses {v:?}", ctx.adapter_name());
    assert_eq!(o.state.step, 60);
    assert!(
        *v.last().unwrap() < v[0] - 0.8,
        "validation loss {v:?} did not fall by 0.8"
    );
    let cls = dir.join("cls");
    let o = finetune(
        ctx,
        &[
            "--arch",
            "bert",
            "--task",
            "classify",
            "--init-from",
            mlm.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            cls.to_str().unwrap(),
            "--batch-size",
            "16",
            "--block-size",
            "32",
            "--steps",
            "150",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "20",
            "--weight-decay",
            "0",
            "--eval-every",
            "150",
        ],
    );
    let (ok, n) = o.accuracy.unwrap();
    eprintln!(
        "{}: sentiment validation accuracy {ok}/{n}",
        ctx.adapter_name()
    );
    assert_eq!(n, 60);
    assert!(
        ok as f64 >= 0.7 * n as f64,
        "accuracy {ok}/{n} is not well above chance (50 %)"
    );
    let saved = std::fs::read_to_string(cls.join("best/config.json")).unwrap();
    assert!(
        saved.contains("BertForSequenceClassification") && saved.contains("positive"),
        "{saved}"
    );
}

fn train_losses(dir: &Path) -> Vec<f32> {
    Metrics::read(&dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { loss, .. } => Some(loss),
            _ => None,
        })
        .collect()
}

#[test]
fn masked_lm_resume_is_bit_exact() {
    for ctx in &test_contexts(&Needs::default()) {
        let dir = scratch("resume");
        let text = corpus(&dir, 20_000);
        let flags = |out: &Path| {
            [
                "--arch",
                "bert",
                "--data",
                text.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--tokenizer",
                "wordpiece:200",
                "--n-embd",
                "24",
                "--n-layer",
                "1",
                "--n-head",
                "2",
                "--block-size",
                "16",
                "--batch-size",
                "4",
                "--grad-accum",
                "2",
                "--steps",
                "6",
                "--eval-every",
                "2",
                "--eval-batches",
                "2",
                "--dropout",
                "0.1",
            ]
            .map(String::from)
            .to_vec()
        };
        let (a, b) = (dir.join("straight"), dir.join("split"));
        let fa = flags(&a);
        pretrain(
            ctx,
            &fa.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        );
        let fb = flags(&b);
        pretrain(
            ctx,
            &fb.iter().map(String::as_str).collect::<Vec<_>>(),
            Some(3),
        );
        pretrain(ctx, &["--resume", "--out", b.to_str().unwrap()], None);
        let (la, lb) = (train_losses(&a), train_losses(&b));
        assert_eq!(la.len(), 6);
        assert!(
            same_bits(&la, &lb),
            "{}: {la:?} vs {lb:?}",
            ctx.adapter_name()
        );
        let w = |d: &Path| std::fs::read(d.join("checkpoint/model.safetensors")).unwrap();
        assert_eq!(w(&a), w(&b), "weights after resume");
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgformer"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

#[test]
fn cli_embeds_and_refuses_wrong_flags() {
    let dir = scratch("cli");
    let text = corpus(&dir, 20_000);
    let out = dir.join("mlm");
    let o = bin()
        .args(["train", "--arch", "bert", "--data"])
        .arg(&text)
        .arg("--out")
        .arg(&out)
        .args([
            "--tokenizer",
            "wordpiece:200",
            "--n-embd",
            "24",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--block-size",
            "16",
        ])
        .args(["--batch-size", "4", "--steps", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = bin()
        .args(["embed", "--model"])
        .arg(out.join("best"))
        .args(["--text", "to be", "--text", "", "--format", "lines"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Vec<f32>> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        assert_eq!(v.len(), 24);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit vectors, got norm {norm}");
    }
    let err = |args: &[&str]| {
        let o = bin().args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let d = text.to_str().unwrap();
    let o2 = dir.join("x");
    let o2 = o2.to_str().unwrap();
    assert!(err(&["train", "--arch", "bert", "--out", o2]).contains("--data"));
    assert!(err(&[
        "train",
        "--arch",
        "bert",
        "--data",
        d,
        "--out",
        o2,
        "--objective",
        "nsp"
    ])
    .contains("--objective"));
    assert!(
        err(&["train", "--objective", "mlm", "--data", d, "--out", o2]).contains("--objective")
    );
    assert!(err(&[
        "finetune",
        "--arch",
        "bert",
        "--data",
        d,
        "--out",
        o2,
        "--init-from",
        out.to_str().unwrap()
    ])
    .contains("--task"));
    assert!(err(&[
        "finetune",
        "--arch",
        "bert",
        "--task",
        "classify",
        "--data",
        d,
        "--out",
        o2,
        "--init-from",
        out.to_str().unwrap()
    ])
    .contains("line 1"));
    assert!(err(&[
        "embed",
        "--model",
        out.to_str().unwrap(),
        "--text",
        "a",
        "--format",
        "csv"
    ])
    .contains("--format"));
}
