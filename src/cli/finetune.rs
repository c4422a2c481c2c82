//! `wgformer finetune`: supervised fine-tuning of a pretrained checkpoint on JSONL
//! prompt → completion pairs. The loss counts completion tokens only (prompt targets are
//! the ignore value -100); examples are padded one per row, or packed. Optimizer,
//! evaluation, checkpoints, resume and progress are `wgformer train`'s, from the same
//! library loop.

use std::path::PathBuf;

use clap::Parser;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::train::progress::ProgressObserver;
use crate::train::{
    plan_finetuning, plan_resume, train, FinetuneOptions, LrSchedule, Plan, RunKind, TrainSettings,
};

const EXAMPLES: &str = "\
Examples:
  wgformer finetune --init-from runs/shakespeare-char --data pairs.jsonl --out runs/sft
      pairs.jsonl holds lines like {\"prompt\": \"Q: who wrote Hamlet?\\nA:\", \"completion\": \" Shakespeare\\n\"}.
      The tokenizer is the checkpoint's; a completion is followed by <|endoftext|> where
      the vocabulary has it (a character-level model has none: end completions with a
      delimiter such as a newline).
  wgformer finetune --resume --out runs/sft --steps 600";

const RUN_DEFINING: [&str; 20] = [
    "init_from",
    "data",
    "pack",
    "val_fraction",
    "block_size",
    "batch_size",
    "grad_accum",
    "lr",
    "min_lr",
    "warmup_steps",
    "decay_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "dropout",
    "eval_every",
    "eval_batches",
    "seed",
    "overwrite",
];

/// Flags of `wgformer finetune`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The pretrained model: a model directory (config.json, model.safetensors,
    /// tokenizer.json) or a run directory of `wgformer train` (its best/ model).
    #[arg(long, value_name = "CHECKPOINT", required_unless_present = "resume")]
    pub init_from: Option<PathBuf>,

    /// Labeled examples: a JSONL file of {"prompt": ..., "completion": ...} lines.
    #[arg(long, value_name = "FILE", required_unless_present = "resume")]
    pub data: Option<PathBuf>,

    /// Pack several examples into each row (else one example per row, padded).
    #[arg(long, help_heading = "Data")]
    pub pack: bool,

    /// Architecture of --init-from: gpt2 (prompt → completion pairs) or bert (with
    /// --task classify: {"text": ..., "label": ...} lines, a classifier on the pooled [CLS]
    /// vector, accuracy on the validation split).
    #[arg(long, default_value = "gpt2", value_name = "ARCH")]
    pub arch: String,

    /// bert: the task; classify is the one there is.
    #[arg(long, value_name = "TASK")]
    pub task: Option<String>,

    /// Fraction of the examples held out for validation (0: evaluate on the training
    /// examples).
    #[arg(long, default_value_t = 0.1, value_name = "F", help_heading = "Data")]
    pub val_fraction: f64,

    /// Row length T [default: the model's context]; an example longer than T + 1 tokens
    /// is an error.
    #[arg(long, value_name = "T", help_heading = "Data")]
    pub block_size: Option<usize>,

    /// Optimizer steps of the whole run [default: 300].
    #[arg(long, value_name = "N", help_heading = "Optimization")]
    pub steps: Option<u64>,

    /// Rows per micro-batch (B).
    #[arg(
        long,
        default_value_t = 8,
        value_name = "B",
        help_heading = "Optimization"
    )]
    pub batch_size: usize,

    /// Micro-batches accumulated into one optimizer step (K).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "K",
        help_heading = "Optimization"
    )]
    pub grad_accum: usize,

    /// Peak learning rate (AdamW).
    #[arg(
        long,
        default_value_t = 3e-4,
        value_name = "LR",
        help_heading = "Optimization"
    )]
    pub lr: f32,

    /// Learning rate at the end of the cosine decay [default: --lr / 10].
    #[arg(long, value_name = "LR", help_heading = "Optimization")]
    pub min_lr: Option<f32>,

    /// Steps of linear warmup.
    #[arg(
        long,
        default_value_t = 20,
        value_name = "N",
        help_heading = "Optimization"
    )]
    pub warmup_steps: u64,

    /// Step at which the cosine decay reaches --min-lr [default: --steps].
    #[arg(long, value_name = "N", help_heading = "Optimization")]
    pub decay_steps: Option<u64>,

    /// AdamW weight decay of matrices and embeddings.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "WD",
        help_heading = "Optimization"
    )]
    pub weight_decay: f32,

    /// AdamW β1.
    #[arg(long, default_value_t = 0.9, help_heading = "Optimization")]
    pub beta1: f32,

    /// AdamW β2.
    #[arg(long, default_value_t = 0.99, help_heading = "Optimization")]
    pub beta2: f32,

    /// Clip the global gradient norm to this; 0 turns clipping off.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "NORM",
        help_heading = "Optimization"
    )]
    pub grad_clip: f32,

    /// Dropout while training (never at evaluation).
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "P",
        help_heading = "Optimization"
    )]
    pub dropout: f32,

    /// Precision of the matmuls: f32 (the reference); f16 (weights read from f16 copies
    /// of the f32 master weights); or mixed (GPT-2's block matmuls also read f16 copies
    /// of their activations and gradients, with dynamic loss scaling). f16 and mixed
    /// need shader-f16.
    #[arg(
        long,
        default_value = "f32",
        value_name = "P",
        help_heading = "Optimization"
    )]
    pub precision: crate::model::half::Precision,

    /// Evaluate, plot and checkpoint every N steps (0: only at the end).
    #[arg(
        long,
        default_value_t = 50,
        value_name = "N",
        help_heading = "Evaluation and checkpoints"
    )]
    pub eval_every: u64,

    /// Batches of B rows per evaluation (at most the validation set).
    #[arg(
        long,
        default_value_t = 20,
        value_name = "N",
        help_heading = "Evaluation and checkpoints"
    )]
    pub eval_batches: usize,

    /// Run directory.
    #[arg(
        long,
        default_value = "runs/finetune",
        value_name = "DIR",
        help_heading = "Run"
    )]
    pub out: PathBuf,

    /// Continue the run in --out from its latest checkpoint, bit for bit. Only --steps
    /// and --stop-at may change.
    #[arg(long, help_heading = "Run", conflicts_with_all = RUN_DEFINING)]
    pub resume: bool,

    /// Start a new run in --out even if it holds one.
    #[arg(long, help_heading = "Run")]
    pub overwrite: bool,

    /// Stop (with a checkpoint) once this many steps are done; continue with --resume.
    #[arg(long, value_name = "STEP", help_heading = "Run")]
    pub stop_at: Option<u64>,

    /// Seed of the validation split, the example order and the dropout masks.
    #[arg(long, default_value_t = 1337, help_heading = "Run")]
    pub seed: u64,

    /// Greedy completions of this many validation (or training) prompts printed at the end.
    #[arg(long, default_value_t = 3, value_name = "N", help_heading = "Run")]
    pub show: usize,
}

/// Default number of steps (see `--steps`).
pub const DEFAULT_STEPS: u64 = 300;

#[derive(Parser)]
#[command(name = "wgformer finetune")]
struct Standalone {
    #[command(flatten)]
    args: Args,
}

/// Parse `wgformer finetune` flags (without the program and subcommand names).
pub fn parse(flags: &[&str]) -> std::result::Result<Args, clap::Error> {
    let argv = std::iter::once("wgformer finetune").chain(flags.iter().copied());
    Standalone::try_parse_from(argv).map(|s| s.args)
}

impl Args {
    pub(crate) fn settings(&self) -> TrainSettings {
        let steps = self.steps.unwrap_or(DEFAULT_STEPS);
        TrainSettings {
            steps,
            batch_size: self.batch_size,
            block_size: 0,
            grad_accum: self.grad_accum,
            schedule: LrSchedule {
                lr: self.lr,
                min_lr: self.min_lr.unwrap_or(self.lr / 10.0),
                warmup_steps: self.warmup_steps,
                decay_steps: self.decay_steps.unwrap_or(steps),
            },
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            grad_clip: self.grad_clip,
            dropout: self.dropout,
            precision: self.precision,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            seed: self.seed,
        }
    }

    /// The library's options for a new run.
    pub fn options(&self) -> Result<FinetuneOptions> {
        let missing = |flag: &str| Error::Invalid(format!("{flag} is required"));
        Ok(FinetuneOptions {
            init_from: self
                .init_from
                .clone()
                .ok_or_else(|| missing("--init-from"))?,
            data: self.data.clone().ok_or_else(|| missing("--data"))?,
            out: self.out.clone(),
            pack: self.pack,
            val_fraction: self.val_fraction,
            block_size: self.block_size,
            train: self.settings(),
            overwrite: self.overwrite,
        })
    }

    /// Plan the run these flags ask for (CPU only).
    pub fn plan(&self) -> Result<Plan> {
        if self.resume {
            plan_resume(&self.out, self.steps, RunKind::Finetune)
        } else {
            plan_finetuning(&self.options()?)
        }
    }
}

pub fn run(opts: &GpuOptions, args: Args) -> Result<bool> {
    if args.stop_at == Some(0) {
        return Err(Error::Invalid("--stop-at must be at least 1".into()));
    }
    let resuming_bert = args.resume && crate::train::bert::is_bert_run(&args.out);
    match args.arch.as_str() {
        "bert" => return crate::cli::bert::finetune(opts, &args),
        _ if resuming_bert => return crate::cli::bert::finetune(opts, &args),
        "gpt2" => {
            if args.task.is_some() {
                return Err(Error::Invalid("--task applies to --arch bert".into()));
            }
        }
        other => {
            return Err(Error::Invalid(format!(
                "--arch {other:?}: expected gpt2 or bert"
            )))
        }
    }
    let plan = args.plan()?;
    let data = std::path::PathBuf::from(&plan.spec.data);
    let ctx = pollster::block_on(GpuContext::with_needs(opts, &plan.needs()))?;
    let mut obs = ProgressObserver::new();
    let outcome = ctx.block_on(train(&ctx, plan, args.stop_at, &mut obs))?;
    super::train::report(&outcome);
    if args.show > 0 {
        show_completions(&ctx, &outcome, &data, args.show)?;
    }
    Ok(true)
}

/// Print the model's greedy completions of the first `n` prompts of `data`.
fn show_completions(
    ctx: &GpuContext,
    outcome: &crate::train::Outcome,
    data: &std::path::Path,
    n: usize,
) -> Result<()> {
    use crate::model::gpt2::generate_greedy;
    use crate::train::tokenize::{decode, eot_id};
    let examples = crate::train::data::read_examples(data, &outcome.tokenizer)?;
    let ctx_len = outcome.model.config.n_positions;
    let eot = eot_id(&outcome.tokenizer);
    println!("\ngreedy completions:");
    for e in examples.iter().take(n) {
        let total = (e.prompt.len() + e.completion.len()).min(ctx_len);
        if total <= e.prompt.len() {
            continue;
        }
        let prompt: Vec<i32> = e.prompt.iter().map(|&i| i as i32).collect();
        let out = ctx.block_on(generate_greedy(ctx, &outcome.model, &prompt, total))?;
        let mut new: Vec<u32> = out[prompt.len()..].iter().map(|&i| i as u32).collect();
        if let Some(end) = new.iter().position(|&t| Some(t) == eot) {
            new.truncate(end);
        }
        println!(
            "  {:?} -> {:?}",
            decode(&outcome.tokenizer, &e.prompt)?,
            decode(&outcome.tokenizer, &new)?
        );
    }
    Ok(())
}
