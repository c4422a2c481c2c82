//! A training run, pretraining or fine-tuning, in two phases. Planning (CPU only, no
//! GPU): read the corpus or the examples, build or load the tokenizer, tokenize into the
//! run directory's cache, decide the model, check every flag, and write `run.json`; the
//! result is a [`Plan`], which also says what device limits the model needs. Training
//! ([`train`], async): build the model and the [`Trainer`] once, then step, evaluate,
//! log, plot and checkpoint, reporting to an [`Observer`] (the CLI's progress bar, or
//! nothing in tests). Resuming plans from `run.json` and the checkpoint instead.
//!
//! A step uploads K·B·T ids and replays the trainer's recorded step: one submit, only the
//! loss read back, nothing allocated. A non-finite loss stops the run before anything is
//! saved, so the last checkpoint on disk is the last good one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Needs};
use crate::infer::model::max_needs;
use crate::kernels::classifier::ClassifierChunk;
use crate::model::checkpoint::write_atomic;
use crate::model::gpt2::{Gpt2, OptimConfig, StepConfig, Trainer};
use crate::model::half::Precision;
use crate::model::params::num_parameters;
use crate::model::Gpt2Config;
use crate::rng::Rng;
use crate::train::data::{
    fingerprint, read_examples, stream_seed, Batch, Batches, Corpus, SftBatches, TextBatches,
    TokenCache,
};
use crate::train::driver::{drive, Steps};
use crate::train::schedule::LrSchedule;
use crate::train::state::{
    find_checkpoint, resolve_model_dir, restore_checkpoint, save_checkpoint, RunDir, TrainerState,
};
use crate::train::tokenize::{self, Normalize, TokenizerSpec};

/// The model of `wgformer train` without a preset or sizes: small enough that the default
/// run (400 steps of 8 × 32 characters of tiny Shakespeare) takes about 3 minutes on a
/// 2-core CPU's software Vulkan (lavapipe) and still learns visibly (validation loss
/// 4.18 → 2.42). Faster adapters can afford `--preset baby` and more steps.
pub const DEFAULT_N_LAYER: usize = 1;
pub const DEFAULT_N_HEAD: usize = 4;
pub const DEFAULT_N_EMBD: usize = 64;
pub const DEFAULT_BLOCK_SIZE: usize = 32;

pub(crate) const STREAM_DROPOUT: u64 = 10;
const STREAM_SPLIT: u64 = 11;

/// How a run optimizes and evaluates (part of `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// B: rows per micro-batch.
    pub batch_size: usize,
    /// T: tokens per row.
    pub block_size: usize,
    /// K: micro-batches per optimizer step.
    pub grad_accum: usize,
    pub schedule: LrSchedule,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    /// Global gradient-norm clip; 0 = off.
    pub grad_clip: f32,
    pub dropout: f32,
    /// Precision the matmuls read weights in (f16: f16 copies of f32 master weights).
    #[serde(default)]
    pub precision: Precision,
    /// Evaluate (and checkpoint) every this many steps; 0 = only at the end.
    pub eval_every: u64,
    /// Batches of (B, T) per evaluation.
    pub eval_batches: usize,
    pub seed: u64,
}

impl TrainSettings {
    /// Check every value, naming the flag that set it.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(msg));
        for (flag, v) in [
            ("--steps", self.steps as usize),
            ("--batch-size", self.batch_size),
            ("--block-size", self.block_size),
            ("--grad-accum", self.grad_accum),
        ] {
            if v == 0 {
                return bad(format!("{flag} must be at least 1"));
            }
        }
        let s = &self.schedule;
        if !(s.lr.is_finite() && s.lr > 0.0) {
            return bad(format!("--lr {} must be a positive number", s.lr));
        }
        if !(s.min_lr.is_finite() && s.min_lr >= 0.0) {
            return bad(format!("--min-lr {} must be a number >= 0", s.min_lr));
        }
        for (flag, b) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{flag} {b} must lie in [0, 1)"));
            }
        }
        for (flag, v) in [
            ("--weight-decay", self.weight_decay),
            ("--grad-clip", self.grad_clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{flag} {v} must be a number >= 0"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--dropout {} must lie in [0, 1)", self.dropout));
        }
        if self.eval_batches == 0 {
            return bad("--eval-batches must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn optim(&self) -> OptimConfig {
        OptimConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            weight_decay: self.weight_decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
        }
    }

    /// Tokens one optimizer step consumes: K·B·T.
    pub fn tokens_per_step(&self) -> usize {
        self.grad_accum * self.batch_size * self.block_size
    }
}

/// Pretraining or fine-tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Pretrain,
    Finetune,
}

/// What a run is, as `run.json` records it; `--resume` rebuilds the run from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub kind: RunKind,
    pub model: Gpt2Config,
    /// The tokenizer as asked for (char, byte, gpt2, bpe:N, a file, or a checkpoint's).
    pub tokenizer: String,
    /// The corpus (pretraining) or the JSONL of examples (fine-tuning).
    pub data: String,
    pub data_fingerprint: u64,
    pub val_fraction: f64,
    /// Fine-tuning: examples packed into rows (else one padded example per row).
    #[serde(default)]
    pub pack: bool,
    pub init_from: Option<String>,
    pub train: TrainSettings,
}

/// Where the weights come from.
#[derive(Clone, Debug)]
pub enum Start {
    /// GPT-2's initialization from the run's seed.
    Fresh,
    /// A Hugging Face model directory.
    From(PathBuf),
    /// A checkpoint of this run (weights, optimizer state, step).
    Resume(PathBuf),
}

/// Everything decided before the GPU is opened.
pub struct Plan {
    pub run: RunDir,
    pub spec: RunSpec,
    pub tokenizer: Tokenizer,
    pub batches: Box<dyn Batches>,
    pub start: Start,
    /// Lines for the user: what was read, built, reused.
    pub notes: Vec<String>,
}

impl Plan {
    /// Device limits the model needs at the run's (B, T), and for the samples it draws
    /// (whole logits of one window of T).
    pub fn needs(&self) -> Needs {
        let (cfg, t) = (&self.spec.model, self.spec.train.block_size);
        let train = Gpt2::needs(cfg, self.spec.train.batch_size, t);
        let sample = Gpt2::needs_with(cfg, 1, t, ClassifierChunk::Whole);
        max_needs(&train, &sample)
    }
}

/// What a model is made of: a preset, explicit sizes, or both (sizes override).
#[derive(Clone, Debug, Default)]
pub struct ModelChoice {
    pub preset: Option<String>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_embd: Option<usize>,
    pub block_size: Option<usize>,
}

impl ModelChoice {
    /// The config for vocabulary `vocab`, and the block size T to train at.
    pub fn config(&self, vocab: usize) -> Result<(Gpt2Config, usize)> {
        let mut cfg = match &self.preset {
            Some(p) => Gpt2Config::preset(p, Some(vocab))
                .map_err(|e| Error::Invalid(format!("--preset: {e}")))?,
            None => Gpt2Config::new(
                vocab,
                DEFAULT_BLOCK_SIZE,
                DEFAULT_N_EMBD,
                DEFAULT_N_LAYER,
                DEFAULT_N_HEAD,
            ),
        };
        if let Some(n) = self.n_layer {
            cfg.n_layer = n;
        }
        if let Some(n) = self.n_head {
            cfg.n_head = n;
        }
        if let Some(n) = self.n_embd {
            cfg.n_embd = n;
        }
        if let Some(t) = self.block_size {
            cfg.n_positions = t;
        }
        cfg.validate("model flags (--preset, --n-layer, --n-head, --n-embd, --block-size)")?;
        Ok((cfg.clone(), cfg.n_positions))
    }
}

/// `wgformer train` as the library sees it.
#[derive(Clone, Debug)]
pub struct PretrainOptions {
    /// None: tiny Shakespeare, embedded.
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub tokenizer: TokenizerSpec,
    pub normalize: Normalize,
    pub val_fraction: f64,
    pub model: ModelChoice,
    pub init_from: Option<PathBuf>,
    /// `block_size` is taken from `model` (or the checkpoint) and overwritten here.
    pub train: TrainSettings,
    pub overwrite: bool,
}

/// `wgformer finetune` as the library sees it.
#[derive(Clone, Debug)]
pub struct FinetuneOptions {
    pub init_from: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub pack: bool,
    pub val_fraction: f64,
    /// None: the model's context.
    pub block_size: Option<usize>,
    /// `block_size` is overwritten from the option above.
    pub train: TrainSettings,
    pub overwrite: bool,
}

pub(crate) fn check_val_fraction(f: f64) -> Result<()> {
    if !(0.0..1.0).contains(&f) {
        return Err(Error::Invalid(format!(
            "--val-fraction {f} must lie in [0, 1)"
        )));
    }
    Ok(())
}

/// Open `out` for a new run: refuse one that holds a checkpoint unless `overwrite`, in
/// which case the previous run's checkpoints, log and plot are removed.
pub(crate) fn fresh_run_dir(out: &Path, overwrite: bool) -> Result<RunDir> {
    let run = RunDir::create(out)?;
    if let Some(ck) = find_checkpoint(&run.latest()) {
        if !overwrite {
            let step = TrainerState::read(&ck.join("trainer.json"))
                .map(|s| format!(" at step {}", s.step))
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "--out {} already holds a training run{step}; pass --resume to continue it, \
                 --overwrite to start again there, or choose another --out",
                out.display()
            )));
        }
    }
    if overwrite {
        for d in [run.latest(), run.best()] {
            for suffix in ["", ".old", ".tmp"] {
                let p = PathBuf::from(format!("{}{suffix}", d.display()));
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(|e| Error::Io {
                        path: p.display().to_string(),
                        source: e,
                    })?;
                }
            }
        }
        for f in [run.metrics(), run.plot()] {
            let _ = std::fs::remove_file(f);
        }
    }
    Ok(run)
}

fn write_spec(run: &RunDir, spec: &RunSpec) -> Result<()> {
    let json = serde_json::to_string_pretty(spec).expect("spec serializes");
    write_atomic(&run.settings(), json.as_bytes())
}

/// The tokenizer of a model directory: its tokenizer.json, or GPT-2's BPE for GPT-2's
/// vocabulary; an error naming the directory otherwise.
fn model_tokenizer(dir: &Path, cfg: &Gpt2Config) -> Result<Tokenizer> {
    let tok = crate::tokenizer::for_model_dir(dir, cfg.vocab_size)?.ok_or_else(|| {
        Error::Invalid(format!(
            "--init-from {}: the checkpoint has no tokenizer.json, and its vocabulary of {} \
             is not GPT-2's; copy the tokenizer it was trained with into it",
            dir.display(),
            cfg.vocab_size
        ))
    })?;
    let need = tokenize::vocab_size(&tok);
    if need > cfg.vocab_size {
        return Err(Error::Invalid(format!(
            "--init-from {}: its tokenizer has {need} tokens but the model only {}; the \
             checkpoint and tokenizer.json do not belong together",
            dir.display(),
            cfg.vocab_size
        )));
    }
    Ok(tok)
}

/// The block size of a run from a checkpoint: `asked` or the model's context.
fn block_for(asked: Option<usize>, cfg: &Gpt2Config) -> Result<usize> {
    let t = asked.unwrap_or(cfg.n_positions);
    if t == 0 || t > cfg.n_positions {
        return Err(Error::Invalid(format!(
            "--block-size {t} must lie in 1..={} (the model's context)",
            cfg.n_positions
        )));
    }
    Ok(t)
}

/// Plan a pretraining run (`wgformer train`).
pub fn plan_pretraining(opts: &PretrainOptions) -> Result<Plan> {
    check_val_fraction(opts.val_fraction)?;
    let mut train = opts.train.clone();
    train.block_size = opts.model.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
    train.validate()?;
    let mut notes = Vec::new();
    // The model and tokenizer: from a checkpoint, or built for the corpus.
    let init_dir = opts
        .init_from
        .as_deref()
        .map(resolve_model_dir)
        .transpose()?;
    let corpus = match &opts.data {
        Some(p) => Corpus::read(p)?,
        None => Corpus::tiny_shakespeare(),
    };
    notes.push(format!(
        "data: {} ({} documents, {:.2} MB)",
        corpus.source,
        corpus.docs.len(),
        corpus.bytes() as f64 / 1e6
    ));
    let run = fresh_run_dir(&opts.out, opts.overwrite)?;
    let (tok, tok_name, cfg, block) = match &init_dir {
        Some(dir) => {
            let cfg = Gpt2Config::from_file(&dir.join("config.json"))?;
            let tok = model_tokenizer(dir, &cfg)?;
            let block = block_for(opts.model.block_size, &cfg)?;
            (
                tok,
                format!("{} (from the checkpoint)", dir.display()),
                cfg,
                block,
            )
        }
        None => {
            let tok = tokenize::build(&opts.tokenizer, opts.normalize, &corpus.docs)?;
            let (cfg, block) = opts.model.config(tokenize::vocab_size(&tok))?;
            (tok, opts.tokenizer.to_string(), cfg, block)
        }
    };
    train.block_size = block;
    notes.push(format!(
        "tokenizer: {tok_name}, {} tokens",
        tokenize::vocab_size(&tok)
    ));
    tokenize::save(&tok, &run.tokenizer())?;
    let (cache, reused) = TokenCache::build_or_load(&run.root, &corpus, &tok, opts.val_fraction)?;
    cache.check(block, cfg.vocab_size, opts.val_fraction)?;
    notes.push(format!(
        "token cache: {} tokens ({} train, {} validation), {} in {}",
        cache.meta.tokens,
        cache.train().len(),
        cache.val().len(),
        if reused { "reused" } else { "written" },
        run.root.join("tokens.bin").display()
    ));
    let batches = TextBatches {
        train: cache.train().to_vec(),
        val: cache.val().to_vec(),
        seed: train.seed,
    };
    let spec = RunSpec {
        kind: RunKind::Pretrain,
        model: cfg,
        tokenizer: tok_name,
        data: corpus.source.clone(),
        data_fingerprint: corpus.fingerprint(),
        val_fraction: opts.val_fraction,
        pack: false,
        init_from: init_dir.as_ref().map(|d| d.display().to_string()),
        train,
    };
    write_spec(&run, &spec)?;
    Ok(Plan {
        run,
        spec,
        tokenizer: tok,
        batches: Box::new(batches),
        start: init_dir.map_or(Start::Fresh, Start::From),
        notes,
    })
}

/// Split `n` examples into (train, validation) indices: a seeded shuffle, the last
/// `val_fraction` (at least one when the fraction is positive and n ≥ 2) validate.
fn split_examples(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(stream_seed(seed, STREAM_SPLIT, 0));
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    let mut n_val = (n as f64 * val_fraction).round() as usize;
    if val_fraction > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    } else {
        n_val = n_val.min(n.saturating_sub(1));
    }
    let val = idx.split_off(n - n_val);
    (idx, val)
}

fn sft_batches(path: &Path, tok: &Tokenizer, spec: &RunSpec) -> Result<(SftBatches, usize, usize)> {
    let examples = read_examples(path, tok)?;
    let (tr, va) = split_examples(examples.len(), spec.val_fraction, spec.train.seed);
    let pick = |ix: &[usize]| ix.iter().map(|&i| examples[i].clone()).collect::<Vec<_>>();
    let batches = SftBatches::new(
        &pick(&tr),
        &pick(&va),
        spec.train.block_size,
        spec.pack,
        spec.train.seed,
        &path.display().to_string(),
    )?;
    Ok((batches, tr.len(), va.len()))
}

pub(crate) fn file_fingerprint(path: &Path) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    Ok(fingerprint(&[&bytes]))
}

/// Plan a fine-tuning run (`wgformer finetune`).
pub fn plan_finetuning(opts: &FinetuneOptions) -> Result<Plan> {
    check_val_fraction(opts.val_fraction)?;
    let dir = resolve_model_dir(&opts.init_from)?;
    let cfg = Gpt2Config::from_file(&dir.join("config.json"))?;
    let tok = model_tokenizer(&dir, &cfg)?;
    let mut train = opts.train.clone();
    train.block_size = block_for(opts.block_size, &cfg)?;
    train.validate()?;
    let run = fresh_run_dir(&opts.out, opts.overwrite)?;
    // Absolute, so that --resume finds the examples from any working directory.
    let data = std::fs::canonicalize(&opts.data).map_err(|e| Error::Io {
        path: opts.data.display().to_string(),
        source: e,
    })?;
    let spec = RunSpec {
        kind: RunKind::Finetune,
        model: cfg,
        tokenizer: format!("{} (from the checkpoint)", dir.display()),
        data: data.display().to_string(),
        data_fingerprint: file_fingerprint(&data)?,
        val_fraction: opts.val_fraction,
        pack: opts.pack,
        init_from: Some(dir.display().to_string()),
        train,
    };
    let (batches, n_train, n_val) = sft_batches(&data, &tok, &spec)?;
    let notes = vec![
        format!("model: {} (tokenizer from the checkpoint)", dir.display()),
        format!(
            "data: {} ({n_train} training examples, {n_val} validation), {}; {}",
            opts.data.display(),
            if opts.pack { "packed" } else { "padded" },
            batches.describe()
        ),
    ];
    tokenize::save(&tok, &run.tokenizer())?;
    write_spec(&run, &spec)?;
    Ok(Plan {
        run,
        spec,
        tokenizer: tok,
        batches: Box::new(batches),
        start: Start::From(dir),
        notes,
    })
}

/// Plan the continuation of the run in `out`, a `kind` run, from its latest checkpoint.
/// `steps` extends (or shortens) the run; the learning-rate schedule keeps its decay
/// horizon.
pub fn plan_resume(out: &Path, steps: Option<u64>, kind: RunKind) -> Result<Plan> {
    let run = RunDir {
        root: out.to_path_buf(),
    };
    let spec_path = run.settings();
    let text = std::fs::read_to_string(&spec_path).map_err(|_| {
        Error::Invalid(format!(
            "--resume: {} holds no run to resume ({} is missing); start one there without \
             --resume",
            out.display(),
            spec_path.display()
        ))
    })?;
    let mut spec: RunSpec = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: not a wgformer run: {e}", spec_path.display())))?;
    if spec.kind != kind {
        let (is, cmd) = match spec.kind {
            RunKind::Pretrain => ("a pretraining", "wgformer train"),
            RunKind::Finetune => ("a fine-tuning", "wgformer finetune"),
        };
        return Err(Error::Invalid(format!(
            "--resume: {} holds {is} run; resume it with `{cmd} --resume --out {}`",
            out.display(),
            out.display()
        )));
    }
    let ck = find_checkpoint(&run.latest()).ok_or_else(|| {
        Error::Invalid(format!(
            "--resume: {} has no checkpoint yet (expected {}); the run stopped before its \
             first checkpoint, so start it again without --resume",
            out.display(),
            run.latest().display()
        ))
    })?;
    if !ck.join("optimizer.safetensors").is_file() || !ck.join("trainer.json").is_file() {
        return Err(Error::Invalid(format!(
            "--resume: {} lacks optimizer.safetensors or trainer.json; it is a model, not a \
             resumable checkpoint",
            ck.display()
        )));
    }
    let state = TrainerState::read(&ck.join("trainer.json"))?;
    let run = RunDir::create(out)?;
    if let Some(s) = steps {
        spec.train.steps = s;
        spec.train.validate()?;
    }
    if state.step >= spec.train.steps {
        return Err(Error::Invalid(format!(
            "--resume: the run in {} is already at step {} of {}; pass --steps with a larger \
             total to train further",
            out.display(),
            state.step,
            spec.train.steps
        )));
    }
    let tok = crate::tokenizer::load(&run.tokenizer())?;
    let mut notes = vec![format!(
        "resuming {} at step {} of {}",
        out.display(),
        state.step,
        spec.train.steps
    )];
    let batches: Box<dyn Batches> = match spec.kind {
        RunKind::Pretrain => {
            let cache = TokenCache::load(&run.root)?;
            cache.check(
                spec.train.block_size,
                spec.model.vocab_size,
                spec.val_fraction,
            )?;
            notes.push(format!(
                "token cache: {} tokens ({} train, {} validation)",
                cache.meta.tokens,
                cache.train().len(),
                cache.val().len()
            ));
            Box::new(TextBatches {
                train: cache.train().to_vec(),
                val: cache.val().to_vec(),
                seed: spec.train.seed,
            })
        }
        RunKind::Finetune => {
            let path = PathBuf::from(&spec.data);
            if file_fingerprint(&path)? != spec.data_fingerprint {
                return Err(Error::Invalid(format!(
                    "--resume: {} changed since the run started; resuming exactly needs the \
                     same examples",
                    path.display()
                )));
            }
            let (b, _, _) = sft_batches(&path, &tok, &spec)?;
            notes.push(format!("data: {}: {}", path.display(), b.describe()));
            Box::new(b)
        }
    };
    write_spec(&run, &spec)?;
    Ok(Plan {
        run,
        spec,
        tokenizer: tok,
        batches,
        start: Start::Resume(ck),
        notes,
    })
}

// ---- training ----

/// One training step, as reported to an [`Observer`].
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Steps completed (this one included).
    pub step: u64,
    pub total: u64,
    pub loss: f32,
    pub lr: f32,
    pub tokens_per_s: f64,
    pub last_val_loss: Option<f32>,
}

/// One evaluation, as reported to an [`Observer`].
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub step: u64,
    pub total: u64,
    pub val_loss: f32,
    pub train_loss: Option<f32>,
    /// The lowest validation loss so far (saved to best/).
    pub best: bool,
}

/// What a run reports as it goes.
pub trait Observer {
    /// A line of information (data, model, memory, checkpoints).
    fn note(&mut self, line: &str);
    /// Training starts at step `start` (0, or the resumed step) of `total`.
    fn begin(&mut self, start: u64, total: u64);
    fn step(&mut self, r: &StepReport);
    fn eval(&mut self, r: &EvalReport);
    fn end(&mut self);
}

/// An observer that drops everything (tests, library use).
pub struct Silent;

impl Observer for Silent {
    fn note(&mut self, _: &str) {}
    fn begin(&mut self, _: u64, _: u64) {}
    fn step(&mut self, _: &StepReport) {}
    fn eval(&mut self, _: &EvalReport) {}
    fn end(&mut self) {}
}

/// The result of [`train`].
pub struct Outcome {
    pub model: Gpt2,
    pub tokenizer: Tokenizer,
    pub spec: RunSpec,
    pub state: TrainerState,
    pub run: RunDir,
    /// The loss of each step this session trained, in order.
    pub losses: Vec<f32>,
}

async fn evaluate(ctx: &GpuContext, trainer: &Trainer, batches: &[Batch]) -> Result<f32> {
    let mut sum = 0f64;
    for b in batches {
        sum += trainer.eval_loss(ctx, &b.x, &b.y).await? as f64;
    }
    Ok((sum / batches.len().max(1) as f64) as f32)
}

/// GPT-2's side of the shared loop (`train::driver`).
struct Gpt2Steps<'a> {
    trainer: Trainer,
    batches: &'a dyn Batches,
    eval_set: Vec<Batch>,
    /// K·B rows per step, of T tokens.
    rows: usize,
    t: usize,
    tokenizer: &'a Tokenizer,
}

impl Steps for Gpt2Steps<'_> {
    async fn step(&mut self, ctx: &GpuContext, step: u64, lr: f32) -> Result<(f32, usize)> {
        let batch = self.batches.train(step, self.rows, self.t);
        let loss = self.trainer.step(ctx, &batch.x, &batch.y, lr).await?;
        Ok((loss, self.trainer.tokens_per_step()))
    }

    async fn evaluate(&mut self, ctx: &GpuContext) -> Result<f32> {
        evaluate(ctx, &self.trainer, &self.eval_set).await
    }

    /// The loss scaler's state on the mixed path (`--precision mixed`).
    async fn eval_note(&mut self, ctx: &GpuContext) -> Result<Option<String>> {
        Ok(self.trainer.loss_scale(ctx).await?.map(|st| {
            format!(
                "loss scale {} ({} steps skipped for f16 overflow so far)",
                st.scale, st.skipped
            )
        }))
    }

    async fn save(
        &self,
        ctx: &GpuContext,
        state: &TrainerState,
        dir: &Path,
        full: bool,
    ) -> Result<()> {
        save_checkpoint(ctx, &self.trainer, self.tokenizer, state, dir, full).await
    }
}

/// Train `plan` until its last step, or until `stop_at` steps are done (the run can be
/// resumed from there, as if it had been interrupted).
pub async fn train(
    ctx: &GpuContext,
    plan: Plan,
    stop_at: Option<u64>,
    obs: &mut dyn Observer,
) -> Result<Outcome> {
    let Plan {
        run,
        spec,
        tokenizer,
        batches,
        start,
        notes,
    } = plan;
    for n in &notes {
        obs.note(n);
    }
    let ts = &spec.train;
    let cfg = spec.model.clone();
    let model = match &start {
        Start::Fresh => Gpt2::init(ctx, cfg.clone(), ts.seed)?,
        Start::From(dir) | Start::Resume(dir) => {
            let m = Gpt2::load(ctx, dir)?;
            if m.config != cfg {
                return Err(Error::Invalid(format!(
                    "{}: the checkpoint's config.json differs from the run's model in {}",
                    dir.display(),
                    run.settings().display()
                )));
            }
            m
        }
    };
    let model = model.with_precision(ctx, ts.precision)?;
    let step_config = StepConfig {
        grad_accum: ts.grad_accum,
        dropout: ts.dropout,
        seed: stream_seed(ts.seed, STREAM_DROPOUT, 0),
        ..StepConfig::default()
    };
    let mut trainer = Trainer::with_config(
        ctx,
        model,
        ts.batch_size,
        ts.block_size,
        ts.optim(),
        step_config,
    )?;
    let mut state = match &start {
        Start::Resume(dir) => restore_checkpoint(ctx, &mut trainer, dir)?,
        _ => TrainerState::fresh(ts.seed),
    };
    obs.note(&format!(
        "model: {} layers, {} heads, {} channels, context {}, vocabulary {}: {:.2}M parameters",
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
        cfg.n_positions,
        cfg.vocab_size,
        num_parameters(&cfg) as f64 / 1e6
    ));
    obs.note(&format!(
        "training: {} steps of {} × {} × {} = {} tokens, lr {:e} (warmup {}, cosine to {:e} at \
         step {}), weight decay {}, dropout {}, clip {}",
        ts.steps,
        ts.grad_accum,
        ts.batch_size,
        ts.block_size,
        ts.tokens_per_step(),
        ts.schedule.lr,
        ts.schedule.warmup_steps,
        ts.schedule.min_lr,
        ts.schedule.decay_steps,
        ts.weight_decay,
        ts.dropout,
        ts.grad_clip
    ));
    obs.note(&format!("{}", trainer.memory(ctx)));
    obs.note(&format!("adapter: {}", ctx.adapter_name()));
    obs.note(&format!("run directory: {}", run.root.display()));
    let resumed = matches!(start, Start::Resume(_));
    let eval_set = batches.eval(ts.eval_batches, ts.batch_size, ts.block_size);
    let title = format!(
        "{} — {}",
        match spec.kind {
            RunKind::Pretrain => "pretraining",
            RunKind::Finetune => "fine-tuning",
        },
        run.root.display()
    );
    let mut steps = Gpt2Steps {
        trainer,
        batches: batches.as_ref(),
        eval_set,
        rows: ts.grad_accum * ts.batch_size,
        t: ts.block_size,
        tokenizer: &tokenizer,
    };
    let losses = drive(
        ctx, &mut steps, &run, ts, &mut state, resumed, stop_at, &title, obs,
    )
    .await?;
    let trainer = steps.trainer;
    let Trainer { model, .. } = trainer;
    Ok(Outcome {
        model,
        tokenizer,
        spec,
        state,
        run,
        losses,
    })
}
