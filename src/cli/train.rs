//! `wgformer train`: pretrain a GPT-2 on text. The flags become a
//! [`PretrainOptions`](crate::train::PretrainOptions) (or a resume), planned on the CPU;
//! then the device is opened with the limits the model needs and the library's async
//! training loop runs under `block_on`, with a progress bar. With no flags at all it
//! trains a small character-level model on tiny Shakespeare (embedded) for a few minutes
//! and prints a sample: `cargo run --release` does exactly that.

use std::path::PathBuf;

use clap::Parser;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::train::progress::ProgressObserver;
use crate::train::sample::{sample_text, SampleOptions};
use crate::train::{
    plan_pretraining, plan_resume, train, LrSchedule, ModelChoice, Outcome, Plan, PretrainOptions,
    RunKind, TrainSettings,
};

const EXAMPLES: &str = "\
Examples:
  wgformer train
      Character-level tiny Shakespeare (embedded), a small model, a few minutes on any
      adapter; prints a sample at the end. Run directory: runs/shakespeare-char.
  wgformer train --data corpus/ --tokenizer bpe:4096 --preset baby --steps 5000 --out runs/mine
      Pretrain on every .txt/.md/.jsonl file under corpus/ with a BPE trained on it.
  wgformer train --resume --out runs/mine --steps 8000
      Continue a stopped run exactly where its last checkpoint left it (and further).
  wgformer train --init-from runs/mine --data more.txt --out runs/more
      Continue pretraining a checkpoint on new text (its tokenizer and model size).

The run directory holds run.json, tokenizer.json, the token cache (tokens.bin), metrics.jsonl,
loss.svg (redrawn at each evaluation), checkpoint/ (latest: model.safetensors, config.json,
tokenizer.json, optimizer.safetensors, trainer.json) and best/ (lowest validation loss).";

/// Flags that define a run; `--resume` takes them from the run's run.json instead.
const RUN_DEFINING: [&str; 30] = [
    "data",
    "objective",
    "arch",
    "encoder_layers",
    "decoder_layers",
    "ffn",
    "target_tokenizer",
    "tokenizer",
    "normalize",
    "val_fraction",
    "preset",
    "n_layer",
    "n_head",
    "n_embd",
    "block_size",
    "init_from",
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
];

/// Flags of `wgformer train`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Training text: a UTF-8 file, a directory (every .txt, .md, .text and .jsonl file
    /// under it), or a JSONL file of {"text": ...} lines. Default: tiny Shakespeare, embedded.
    #[arg(long, value_name = "PATH", help_heading = "Data")]
    pub data: Option<PathBuf>,

    /// Tokenizer: char (one token per character of the corpus), byte (256 tokens), gpt2
    /// (GPT-2's BPE, 50257 tokens), bpe:<size> (a byte-level BPE trained on the corpus, e.g.
    /// bpe:4096), or the path of a tokenizer.json. Saved into the run directory.
    #[arg(
        long,
        default_value = "char",
        value_name = "KIND",
        help_heading = "Data"
    )]
    pub tokenizer: String,

    /// Unicode normalization before tokenizing, comma-separated: nfc or nfkc, lowercase;
    /// or none. Stored in tokenizer.json, so generation normalizes the same way.
    #[arg(
        long,
        default_value = "none",
        value_name = "LIST",
        help_heading = "Data"
    )]
    pub normalize: String,

    /// Fraction of the tokens (the end of the corpus) held out for validation.
    #[arg(long, default_value_t = 0.1, value_name = "F", help_heading = "Data")]
    pub val_fraction: f64,

    /// Model size preset: baby (nanoGPT's baby GPT: 4 layers, 4 heads, 128 channels,
    /// context 64), tiny, gpt2 (124M), gpt2-medium. The vocabulary always follows the
    /// tokenizer. --n-layer/--n-head/--n-embd/--block-size override a preset's values.
    #[arg(long, value_name = "NAME", help_heading = "Model")]
    pub preset: Option<String>,

    /// Transformer blocks L [default: 1, or the preset's].
    #[arg(long, value_name = "L", help_heading = "Model")]
    pub n_layer: Option<usize>,

    /// Attention heads NH; must divide --n-embd [default: 4, or the preset's].
    #[arg(long, value_name = "NH", help_heading = "Model")]
    pub n_head: Option<usize>,

    /// Channels C [default: 64, or the preset's].
    #[arg(long, value_name = "C", help_heading = "Model")]
    pub n_embd: Option<usize>,

    /// Context length T trained at (and the model's context) [default: 32, the preset's,
    /// or the checkpoint's].
    #[arg(long, value_name = "T", help_heading = "Model")]
    pub block_size: Option<usize>,

    /// Architecture: gpt2 (a decoder trained on text), seq2seq (an encoder–decoder,
    /// torch.nn.Transformer's, trained on a JSONL of {"source": ..., "target": ...} pairs
    /// given by --data; --n-embd, --n-head, --n-layer size it) or bert (an encoder
    /// pretrained with --objective mlm on the text of --data; --tokenizer wordpiece:N or
    /// a BERT tokenizer.json, default wordpiece:2000).
    #[arg(
        long,
        default_value = "gpt2",
        value_name = "ARCH",
        help_heading = "Model"
    )]
    pub arch: String,

    /// bert: the pretraining objective; mlm (masked language modelling: 15 % of the
    /// tokens masked 80/10/10, loss on those only) is the one there is.
    #[arg(long, value_name = "OBJ", help_heading = "Model")]
    pub objective: Option<String>,

    /// seq2seq: encoder blocks [default: --n-layer, or 2].
    #[arg(long, value_name = "L", help_heading = "Model")]
    pub encoder_layers: Option<usize>,

    /// seq2seq: decoder blocks [default: --n-layer, or 2].
    #[arg(long, value_name = "L", help_heading = "Model")]
    pub decoder_layers: Option<usize>,

    /// seq2seq: width of the ReLU feed-forward [default: 4·C].
    #[arg(long, value_name = "F", help_heading = "Model")]
    pub ffn: Option<usize>,

    /// seq2seq: a separate tokenizer for the targets (same kinds as --tokenizer, built from
    /// the targets); by default one tokenizer, built from both sides, serves both.
    #[arg(long, value_name = "KIND", help_heading = "Data")]
    pub target_tokenizer: Option<String>,

    /// Start from a checkpoint instead of a fresh model: a model directory (config.json,
    /// model.safetensors, tokenizer.json) or a run directory (its best/ model). Its
    /// tokenizer and sizes are used.
    #[arg(long, value_name = "CHECKPOINT", help_heading = "Model",
          conflicts_with_all = ["preset", "n_layer", "n_head", "n_embd", "tokenizer", "normalize"])]
    pub init_from: Option<PathBuf>,

    /// Optimizer steps of the whole run [default: 400].
    #[arg(long, value_name = "N", help_heading = "Optimization")]
    pub steps: Option<u64>,

    /// Sequences per micro-batch (B).
    #[arg(
        long,
        default_value_t = 8,
        value_name = "B",
        help_heading = "Optimization"
    )]
    pub batch_size: usize,

    /// Micro-batches whose gradients are accumulated into one optimizer step (K); a step
    /// sees K·B sequences.
    #[arg(
        long,
        default_value_t = 1,
        value_name = "K",
        help_heading = "Optimization"
    )]
    pub grad_accum: usize,

    /// Peak learning rate (AdamW), reached after the warmup.
    #[arg(
        long,
        default_value_t = 3e-3,
        value_name = "LR",
        help_heading = "Optimization"
    )]
    pub lr: f32,

    /// Learning rate at the end of the cosine decay [default: --lr / 10].
    #[arg(long, value_name = "LR", help_heading = "Optimization")]
    pub min_lr: Option<f32>,

    /// Steps of linear warmup from 0 to --lr.
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

    /// AdamW weight decay of matrices and embeddings (biases and layernorm are not decayed).
    #[arg(
        long,
        default_value_t = 0.1,
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

    /// Dropout on embeddings, attention and MLP outputs while training (never at
    /// evaluation); the masks are a function of --seed and the step.
    #[arg(
        long,
        default_value_t = 0.0,
        value_name = "P",
        help_heading = "Optimization"
    )]
    pub dropout: f32,

    /// Precision of the matmuls: f32 (the reference); f16 (weights read from f16 copies
    /// of the f32 master weights, refreshed after every update); or mixed (the block
    /// matmuls also read f16 copies of their activations and gradients, with dynamic
    /// loss scaling). f16 and mixed need shader-f16.
    #[arg(
        long,
        default_value = "f32",
        value_name = "P",
        help_heading = "Optimization"
    )]
    pub precision: crate::model::half::Precision,

    /// Evaluate on the validation split, redraw loss.svg and checkpoint every N steps
    /// (0: only at the end).
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        help_heading = "Evaluation and checkpoints"
    )]
    pub eval_every: u64,

    /// Batches of B sequences per evaluation (the same batches every time).
    #[arg(
        long,
        default_value_t = 10,
        value_name = "N",
        help_heading = "Evaluation and checkpoints"
    )]
    pub eval_batches: usize,

    /// Run directory: tokenizer, token cache, metrics, plot and checkpoints
    /// [default: runs/shakespeare-char, or runs/<data name>].
    #[arg(long, value_name = "DIR", help_heading = "Run")]
    pub out: Option<PathBuf>,

    /// Continue the run in --out from its latest checkpoint, bit for bit as if it had
    /// never stopped. Only --steps and --stop-at may change.
    #[arg(long, help_heading = "Run", conflicts_with_all = RUN_DEFINING)]
    pub resume: bool,

    /// Start a new run in --out even if it holds one (its checkpoints are deleted).
    #[arg(long, help_heading = "Run", conflicts_with = "resume")]
    pub overwrite: bool,

    /// Stop (with a checkpoint) once this many steps are done, as if interrupted; the
    /// learning-rate schedule still spans --steps. Continue later with --resume.
    #[arg(long, value_name = "STEP", help_heading = "Run")]
    pub stop_at: Option<u64>,

    /// Seed of the initialization, the batches and the dropout masks.
    #[arg(long, default_value_t = 1337, help_heading = "Run")]
    pub seed: u64,

    /// Tokens of the sample printed at the end (0: none).
    #[arg(long, default_value_t = 300, value_name = "N", help_heading = "Run")]
    pub sample_tokens: usize,

    /// Text the sample continues.
    #[arg(long, default_value = "\n", value_name = "TEXT", help_heading = "Run")]
    pub sample_prompt: String,
}

/// Default number of steps (see `--steps`).
pub const DEFAULT_STEPS: u64 = 400;

#[derive(Parser)]
#[command(name = "wgformer train")]
struct Standalone {
    #[command(flatten)]
    args: Args,
}

/// Parse `wgformer train` flags (without the program and subcommand names), as the
/// command line would; for tests and for the default run.
pub fn parse(flags: &[&str]) -> std::result::Result<Args, clap::Error> {
    let argv = std::iter::once("wgformer train").chain(flags.iter().copied());
    Standalone::try_parse_from(argv).map(|s| s.args)
}

impl Args {
    /// The run directory: --out, or runs/<data name>.
    pub fn out_dir(&self) -> PathBuf {
        if let Some(o) = &self.out {
            return o.clone();
        }
        let name = match &self.data {
            None => "shakespeare-char".to_string(),
            Some(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "run".into()),
        };
        PathBuf::from("runs").join(name)
    }

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
    pub fn options(&self) -> Result<PretrainOptions> {
        Ok(PretrainOptions {
            data: self.data.clone(),
            out: self.out_dir(),
            tokenizer: self.tokenizer.parse()?,
            normalize: self.normalize.parse()?,
            val_fraction: self.val_fraction,
            model: ModelChoice {
                preset: self.preset.clone(),
                n_layer: self.n_layer,
                n_head: self.n_head,
                n_embd: self.n_embd,
                block_size: self.block_size,
            },
            init_from: self.init_from.clone(),
            train: self.settings(),
            overwrite: self.overwrite,
        })
    }

    /// Plan the run these flags ask for (CPU only: reads data, builds the tokenizer and
    /// the token cache, writes run.json).
    pub fn plan(&self) -> Result<Plan> {
        if self.resume {
            plan_resume(&self.out_dir(), self.steps, RunKind::Pretrain)
        } else {
            plan_pretraining(&self.options()?)
        }
    }
}

/// Print where the run's files are and a summary of how it went.
pub(crate) fn report(outcome: &Outcome) {
    let s = &outcome.state;
    let mins = s.elapsed_s / 60.0;
    let val = s.last_val_loss.map_or("-".into(), |v| format!("{v:.4}"));
    let best = match (s.best_val_loss, s.best_step) {
        (Some(b), Some(at)) => format!(", best {b:.4} at step {at}"),
        _ => String::new(),
    };
    println!(
        "trained {} steps in {mins:.1} min ({} tokens); validation loss {val}{best}",
        s.step, s.tokens_seen
    );
    let r = &outcome.run;
    println!(
        "files: {} (latest checkpoint), {} (best), {}, {}",
        r.latest().display(),
        r.best().display(),
        r.metrics().display(),
        r.plot().display()
    );
}

/// Sample `tokens` tokens after `prompt` from the trained model and print them.
pub(crate) fn print_sample(
    ctx: &GpuContext,
    outcome: &Outcome,
    prompt: &str,
    tokens: usize,
    seed: u64,
) -> Result<()> {
    if tokens == 0 {
        return Ok(());
    }
    let opts = SampleOptions {
        tokens,
        temperature: 0.8,
        top_k: 200,
        seed,
        window: outcome.spec.train.block_size,
    };
    let text = ctx.block_on(sample_text(
        ctx,
        &outcome.model,
        &outcome.tokenizer,
        prompt,
        &opts,
    ))?;
    println!(
        "\nsample ({tokens} tokens, temperature 0.8, top-k 200):\n{}\n{text}\n{}",
        "-".repeat(60),
        "-".repeat(60)
    );
    Ok(())
}

pub fn run(opts: &GpuOptions, args: Args) -> Result<bool> {
    if args.stop_at == Some(0) {
        return Err(Error::Invalid("--stop-at must be at least 1".into()));
    }
    let resuming_seq2seq = args.resume && crate::train::seq2seq::is_seq2seq_run(&args.out_dir());
    let resuming_bert = args.resume && crate::train::bert::is_bert_run(&args.out_dir());
    match args.arch.as_str() {
        "seq2seq" => return crate::cli::seq2seq::train(opts, &args),
        "bert" => return crate::cli::bert::train(opts, &args),
        _ if resuming_seq2seq => return crate::cli::seq2seq::train(opts, &args),
        _ if resuming_bert => return crate::cli::bert::train(opts, &args),
        "gpt2" => {}
        other => {
            return Err(Error::Invalid(format!(
                "--arch {other:?}: expected gpt2, seq2seq or bert"
            )))
        }
    }
    if args.objective.is_some() {
        return Err(Error::Invalid(
            "--objective applies to --arch bert only".into(),
        ));
    }
    for (flag, given) in [
        ("--encoder-layers", args.encoder_layers.is_some()),
        ("--decoder-layers", args.decoder_layers.is_some()),
        ("--ffn", args.ffn.is_some()),
        ("--target-tokenizer", args.target_tokenizer.is_some()),
    ] {
        if given {
            return Err(Error::Invalid(format!(
                "{flag} applies to --arch seq2seq only"
            )));
        }
    }
    let plan = args.plan()?;
    let ctx = pollster::block_on(GpuContext::with_needs(opts, &plan.needs()))?;
    let mut obs = ProgressObserver::new();
    let outcome = ctx.block_on(train(&ctx, plan, args.stop_at, &mut obs))?;
    report(&outcome);
    print_sample(
        &ctx,
        &outcome,
        &args.sample_prompt,
        args.sample_tokens,
        args.seed,
    )?;
    Ok(true)
}

/// `wgformer` with no command: the default training run (tiny Shakespeare, character
/// level, a small model), started afresh in runs/shakespeare-char each time.
pub fn run_default(opts: &GpuOptions) -> Result<bool> {
    let args = parse(&["--overwrite"]).map_err(|e| Error::Invalid(e.to_string()))?;
    println!(
        "wgformer: training a character-level GPT on tiny Shakespeare (`wgformer train \
         --help` for everything it can do; `wgformer info` and `wgformer selfcheck` check \
         the adapter and the kernels)\n"
    );
    run(opts, args)
}
