//! `wgformer train` end to end at toy sizes: a short run whose loss must fall below a
//! stated bound (CI's check that training works), exact resume (N + M steps straight
//! versus N, stop, resume M: identical f32 losses and weights, with dropout and gradient
//! accumulation on), gradient accumulation against one big batch, dropout on and off,
//! checkpoints, the metrics log and the plot. The bad-input cases are in
//! tests/train_errors.rs; tokenizers, data and schedules in tests/train_data.rs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wgformer::gpu::{GpuContext, Needs};
use wgformer::model::gpt2::{Gpt2, OptimConfig, StepConfig, Trainer};
use wgformer::model::Gpt2Config;
use wgformer::rng::Rng;
use wgformer::testing::{same_bits, test_contexts};
use wgformer::train::data::TINY_SHAKESPEARE;
use wgformer::train::metrics::{Metrics, Record};
use wgformer::train::{train, Outcome, Silent};

/// The test contexts, opened once for the whole file so pipelines compile once.
fn contexts() -> &'static [GpuContext] {
    static CTX: OnceLock<Vec<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| test_contexts(&Needs::default()))
}

/// A fresh scratch directory for test `name`.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The first `n` bytes of tiny Shakespeare (cut at a line end), as a file in `dir`.
fn shakespeare(dir: &Path, n: usize) -> PathBuf {
    let end = TINY_SHAKESPEARE[..n].rfind('\n').unwrap() + 1;
    let p = dir.join("shakespeare.txt");
    std::fs::write(&p, &TINY_SHAKESPEARE[..end]).unwrap();
    p
}

/// Plan and train `wgformer train <flags>` on `ctx`, stopping after `stop_at` steps.
fn run(ctx: &GpuContext, flags: &[&str], stop_at: Option<u64>) -> Outcome {
    let args = wgformer::cli::train::parse(flags).unwrap();
    let plan = args.plan().unwrap();
    ctx.block_on(train(ctx, plan, stop_at, &mut Silent))
        .unwrap()
}

/// (step, loss) pairs of a run's log.
type StepLosses = Vec<(u64, f32)>;

/// (step, loss) of every training record and (step, val_loss) of every evaluation.
fn losses(dir: &Path) -> (StepLosses, StepLosses) {
    let records = Metrics::read(&dir.join("metrics.jsonl")).unwrap();
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for r in records {
        match r {
            Record::Train { step, loss, .. } => train.push((step, loss)),
            Record::Eval { step, val_loss, .. } => eval.push((step, val_loss)),
        }
    }
    (train, eval)
}

const TOY: [&str; 12] = [
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "32",
    "--block-size",
    "32",
    "--batch-size",
    "8",
    "--sample-tokens",
    "0",
];

/// CI's training check: 40 steps of a toy character-level model (1 layer, 32 channels) on
/// 60 kB of Shakespeare take the validation loss from ln(V) ≈ 4.1 (uniform) to below
/// 3.45: the model has learned at least the character frequencies (the unigram entropy is
/// about 3.3 nats). Kept this small for CI time on a software adapter.
#[test]
fn short_training_run_learns() {
    for ctx in contexts() {
        let dir = scratch("learns");
        let data = shakespeare(&dir, 60_000);
        let out = dir.join("run");
        let mut flags = vec![
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "40",
            "--lr",
            "1e-2",
            "--warmup-steps",
            "5",
            "--eval-every",
            "20",
            "--eval-batches",
            "4",
        ];
        flags.extend(TOY);
        let t0 = std::time::Instant::now();
        let outcome = run(ctx, &flags, None);
        let (train_losses, evals) = losses(&out);
        eprintln!(
            "{}: 40 steps in {:.1} s; evaluations {evals:?}",
            ctx.adapter_name(),
            t0.elapsed().as_secs_f64()
        );
        assert_eq!(train_losses.len(), 40);
        let first = evals[0].1;
        let last = outcome.state.last_val_loss.unwrap();
        assert!((first - 65f32.ln()).abs() < 0.5, "initial loss {first}");
        assert!(
            last < 3.45,
            "validation loss {last} did not fall below 3.45"
        );
        assert!(
            last < first - 0.6,
            "validation loss fell only from {first} to {last}"
        );
        // Checkpoints, the best model, the log and the plot are all there.
        for f in [
            "run.json",
            "tokenizer.json",
            "tokens.bin",
            "tokens.json",
            "metrics.jsonl",
            "loss.svg",
            "checkpoint/model.safetensors",
            "checkpoint/config.json",
            "checkpoint/tokenizer.json",
            "checkpoint/optimizer.safetensors",
            "checkpoint/trainer.json",
            "best/model.safetensors",
            "best/tokenizer.json",
        ] {
            assert!(out.join(f).is_file(), "{f} missing");
        }
        let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("validation"));
        // The saved checkpoint is a Hugging Face model directory that loads back.
        let again = Gpt2::load(ctx, &out.join("checkpoint")).unwrap();
        assert_eq!(again.config, outcome.model.config);
        // A second run into the same directory is refused without --overwrite.
        let args = wgformer::cli::train::parse(&flags).unwrap();
        let err = args.plan().err().unwrap().to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite"),
            "{err}"
        );
    }
}

/// A run stopped at step N and resumed shows the same losses, bit for bit, as one that
/// never stopped, and ends with the same weights: with dropout and 2 micro-batches per
/// step, so the dropout masks and the data position are restored too.
#[test]
fn resume_is_bit_exact() {
    for ctx in contexts() {
        let dir = scratch("resume");
        let data = shakespeare(&dir, 20_000);
        let straight = dir.join("straight");
        let stopped = dir.join("stopped");
        let flags = |out: &Path| -> Vec<String> {
            let out = out.to_str().unwrap();
            let data = data.to_str().unwrap();
            #[rustfmt::skip]
            let f = [
                "--data", data, "--out", out, "--steps", "8", "--warmup-steps", "2",
                "--eval-every", "2", "--eval-batches", "2", "--dropout", "0.1",
                "--grad-accum", "2", "--batch-size", "2", "--n-layer", "1", "--n-head", "2",
                "--n-embd", "16", "--block-size", "16", "--sample-tokens", "0",
            ];
            f.iter().map(|s| s.to_string()).collect()
        };
        let a = flags(&straight);
        let full = run(ctx, &a.iter().map(String::as_str).collect::<Vec<_>>(), None);
        let b = flags(&stopped);
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        let first = run(ctx, &b, Some(3));
        assert_eq!(first.state.step, 3);
        drop(first);
        let resume = [
            "--resume",
            "--out",
            stopped.to_str().unwrap(),
            "--sample-tokens",
            "0",
        ];
        let resumed = run(ctx, &resume, None);
        assert_eq!(resumed.losses.len(), 5);
        let (ta, ea) = losses(&straight);
        let (tb, eb) = losses(&stopped);
        eprintln!("straight {ta:?}\nresumed  {tb:?}");
        assert_eq!(ta.len(), 8);
        let la: Vec<f32> = ta.iter().map(|p| p.1).collect();
        let lb: Vec<f32> = tb.iter().map(|p| p.1).collect();
        assert_eq!(
            ta.iter().map(|p| p.0).collect::<Vec<_>>(),
            tb.iter().map(|p| p.0).collect::<Vec<_>>()
        );
        assert!(same_bits(&la, &lb), "losses differ:\n{la:?}\n{lb:?}");
        let va: Vec<f32> = ea.iter().map(|p| p.1).collect();
        let vb: Vec<f32> = eb.iter().map(|p| p.1).collect();
        assert!(
            same_bits(&va, &vb),
            "validation losses differ:\n{ea:?}\n{eb:?}"
        );
        let wa = ctx.block_on(full.model.params.read_all(ctx)).unwrap();
        let wb = ctx.block_on(resumed.model.params.read_all(ctx)).unwrap();
        for (x, y) in wa.iter().zip(&wb) {
            assert!(same_bits(x, y), "final weights differ");
        }
    }
}

fn random_batch(rng: &mut Rng, n: usize, v: usize) -> (Vec<i32>, Vec<i32>) {
    let x = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let y = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    (x, y)
}

/// K = 2 micro-batches of B = 2 rows take the step one batch of 4 rows takes: the same
/// mean loss and, up to rounding, the same weights after the update.
#[test]
fn gradient_accumulation_matches_one_big_batch() {
    // Contexts of its own: the test counts submits, which other tests would add to.
    for ctx in &test_contexts(&Needs::default()) {
        let cfg = Gpt2Config::new(29, 8, 16, 2, 2);
        let (b, t) = (4, 8);
        let mut rng = Rng::new(9);
        let (x, y) = random_batch(&mut rng, b * t, 29);
        let opt = OptimConfig::default();
        let model = Gpt2::init(ctx, cfg.clone(), 3).unwrap();
        let mut big = Trainer::new(ctx, model, b, t, opt.clone()).unwrap();
        let model = Gpt2::init(ctx, cfg.clone(), 3).unwrap();
        let accum = StepConfig {
            grad_accum: 2,
            ..StepConfig::default()
        };
        let mut small = Trainer::with_config(ctx, model, b / 2, t, opt, accum).unwrap();
        let submits = ctx.submit_count();
        let lb = ctx.block_on(big.step(ctx, &x, &y, 1e-2)).unwrap();
        let ls = ctx.block_on(small.step(ctx, &x, &y, 1e-2)).unwrap();
        // One submit per optimizer step, accumulation or not.
        assert_eq!(ctx.submit_count() - submits, 2);
        assert!((lb - ls).abs() < 1e-5, "loss {lb} vs {ls}");
        let wb = ctx.block_on(big.model.params.read_all(ctx)).unwrap();
        let ws = ctx.block_on(small.model.params.read_all(ctx)).unwrap();
        let (mut max, mut moved) = (0f32, 0f32);
        for (p, q) in wb.iter().zip(&ws) {
            for (a, c) in p.iter().zip(q) {
                max = max.max((a - c).abs());
            }
        }
        let init = ctx
            .block_on(
                Gpt2::init(ctx, cfg.clone(), 3)
                    .unwrap()
                    .params
                    .read_all(ctx),
            )
            .unwrap();
        for (p, q) in wb.iter().zip(&init) {
            for (a, c) in p.iter().zip(q) {
                moved = moved.max((a - c).abs());
            }
        }
        eprintln!("max |Δ weight| {max:e}; the step moved weights by up to {moved:e}");
        // AdamW moves each weight by about lr = 1e-2; the two gradients differ only by
        // summation order, so the updates agree far below that.
        assert!(max < 1e-4 && moved > 1e-3, "max |Δ| {max}, moved {moved}");
    }
}

/// Dropout changes the training loss, is deterministic for a seed, differs between seeds,
/// and is off at evaluation; p = 0 is exactly the plain step.
#[test]
fn dropout_is_seeded_and_off_at_eval() {
    for ctx in contexts() {
        let cfg = Gpt2Config::new(31, 8, 16, 2, 2);
        let (b, t) = (2, 8);
        let mut rng = Rng::new(4);
        let (x, y) = random_batch(&mut rng, b * t, 31);
        let step_loss = |p: f32, seed: u64| {
            let model = Gpt2::init(ctx, cfg.clone(), 1).unwrap();
            let sc = StepConfig {
                dropout: p,
                seed,
                ..StepConfig::default()
            };
            let mut tr =
                Trainer::with_config(ctx, model, b, t, OptimConfig::default(), sc).unwrap();
            let eval_before = ctx.block_on(tr.eval_loss(ctx, &x, &y)).unwrap();
            let loss = ctx.block_on(tr.step(ctx, &x, &y, 1e-3)).unwrap();
            (eval_before, loss)
        };
        let (e0, plain) = step_loss(0.0, 0);
        let (e1, a) = step_loss(0.3, 7);
        let (_, a_again) = step_loss(0.3, 7);
        let (_, other) = step_loss(0.3, 8);
        assert!(same_bits(&[e0], &[e1]), "evaluation must not drop");
        assert!(same_bits(&[a], &[a_again]), "same seed, same masks");
        assert_ne!(a.to_bits(), plain.to_bits());
        assert_ne!(a.to_bits(), other.to_bits());
        // p = 0 records no dropout at all: the same bits as the trainer without config.
        let model = Gpt2::init(ctx, cfg.clone(), 1).unwrap();
        let mut tr = Trainer::new(ctx, model, b, t, OptimConfig::default()).unwrap();
        let l = ctx.block_on(tr.step(ctx, &x, &y, 1e-3)).unwrap();
        assert!(same_bits(&[l], &[plain]));
    }
}
