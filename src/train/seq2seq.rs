//! Training an encoder–decoder on source → target pairs (`wgformer train --arch
//! seq2seq`), with everything the GPT-2 path has: AdamW with warmup and cosine decay,
//! clipping, gradient accumulation, evaluation, `metrics.jsonl` and `loss.svg`, atomic
//! checkpoints (latest and best) and bit-exact resume. Planning reads and tokenizes the
//! pairs on the CPU and writes `run.json`; training opens nothing but the trainer's
//! recorded step. The run ends with the exact-match accuracy of greedy decoding on the
//! validation pairs.
//!
//! Tokenizers: one shared by both sides (`tokenizer.json`), or one per side
//! (`source_tokenizer.json`, `target_tokenizer.json`), each with `<pad>`, `<s>`, `</s>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Needs};
use crate::infer::translate::{translate, TranslateOptions};
use crate::model::checkpoint::write_atomic;
use crate::model::gpt2::StepConfig;
use crate::model::seq2seq::params::seq2seq_params;
use crate::model::seq2seq::trainer::Seq2seqBatchRef;
use crate::model::seq2seq::{Seq2seq, Seq2seqConfig, Seq2seqTrainer};
use crate::train::data::stream_seed;
use crate::train::driver::{drive, Steps};
use crate::train::pairs::{
    self, read_pairs, special_ids, tokenize_pairs, Pair, PairBatches, Seq2seqBatch,
};
use crate::train::run::{
    check_val_fraction, file_fingerprint, fresh_run_dir, Observer, TrainSettings, STREAM_DROPOUT,
};
use crate::train::state::{
    begin_checkpoint, commit_checkpoint, find_checkpoint, optimizer_bytes, read_optimizer,
    ParamShapes, RunDir, TrainerState,
};
use crate::train::tokenize::{Normalize, TokenizerSpec};

/// Sizes of a new encoder–decoder (`None`: the default).
#[derive(Clone, Debug, Default)]
pub struct Seq2seqModelChoice {
    pub d_model: Option<usize>,
    pub heads: Option<usize>,
    pub encoder_layers: Option<usize>,
    pub decoder_layers: Option<usize>,
    pub ffn: Option<usize>,
}

pub const DEFAULT_D_MODEL: usize = 64;
pub const DEFAULT_HEADS: usize = 4;
pub const DEFAULT_LAYERS: usize = 2;
/// Positions the sinusoidal table covers beyond the training pairs' lengths.
pub const DEFAULT_MAX_LEN: usize = 256;

/// `wgformer train --arch seq2seq` as the library sees it.
#[derive(Clone, Debug)]
pub struct Seq2seqOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    /// The source side's tokenizer, and the target's unless `target_tokenizer` is given.
    pub tokenizer: TokenizerSpec,
    /// A separate tokenizer for the targets.
    pub target_tokenizer: Option<TokenizerSpec>,
    pub normalize: Normalize,
    pub val_fraction: f64,
    pub model: Seq2seqModelChoice,
    /// `block_size` is overwritten with the target length T.
    pub train: TrainSettings,
    pub overwrite: bool,
}

/// What a seq2seq run is, as `run.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Seq2seqRunSpec {
    /// Always "seq2seq".
    pub arch: String,
    /// The model's config.json.
    pub model: serde_json::Value,
    pub tokenizer: String,
    pub target_tokenizer: Option<String>,
    pub data: String,
    pub data_fingerprint: u64,
    pub val_fraction: f64,
    /// Source length S of every batch.
    pub source_len: usize,
    /// `block_size` is the target length T of every batch.
    pub train: TrainSettings,
}

impl Seq2seqRunSpec {
    pub fn config(&self, origin: &str) -> Result<Seq2seqConfig> {
        Seq2seqConfig::from_json(&self.model.to_string(), origin)
    }
}

/// Everything decided before the GPU is opened.
pub struct Seq2seqPlan {
    pub run: RunDir,
    pub spec: Seq2seqRunSpec,
    pub config: Seq2seqConfig,
    pub src_tok: Tokenizer,
    pub tgt_tok: Tokenizer,
    pub batches: PairBatches,
    /// The checkpoint to resume from.
    pub resume: Option<PathBuf>,
    pub notes: Vec<String>,
}

impl Seq2seqPlan {
    pub fn needs(&self) -> Needs {
        let t = &self.spec.train;
        Seq2seq::needs(&self.config, t.batch_size, self.batches.s, self.batches.t)
    }
}

/// Is the run in `dir` (its run.json) an encoder–decoder run?
pub fn is_seq2seq_run(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("arch").and_then(|a| a.as_str()) == Some("seq2seq"))
}

/// Save the tokenizers into `dir`: one `tokenizer.json`, or one per side.
pub fn save_tokenizers(dir: &Path, src: &Tokenizer, tgt: &Tokenizer, shared: bool) -> Result<()> {
    if shared {
        crate::train::tokenize::save(src, &dir.join("tokenizer.json"))
    } else {
        crate::train::tokenize::save(src, &dir.join("source_tokenizer.json"))?;
        crate::train::tokenize::save(tgt, &dir.join("target_tokenizer.json"))
    }
}

/// The tokenizers of a model or run directory: (source, target).
pub fn load_tokenizers(dir: &Path) -> Result<(Tokenizer, Tokenizer)> {
    let shared = dir.join("tokenizer.json");
    if shared.is_file() {
        let t = crate::tokenizer::load(&shared)?;
        return Ok((t.clone(), t));
    }
    let (s, t) = (
        dir.join("source_tokenizer.json"),
        dir.join("target_tokenizer.json"),
    );
    if s.is_file() && t.is_file() {
        return Ok((crate::tokenizer::load(&s)?, crate::tokenizer::load(&t)?));
    }
    Err(Error::Invalid(format!(
        "{}: no tokenizer.json (or source_tokenizer.json and target_tokenizer.json)",
        dir.display()
    )))
}

fn vocab(tok: &Tokenizer) -> usize {
    crate::train::tokenize::vocab_size(tok)
}

/// Read, tokenize and split the pairs of `data` for `spec`.
fn pair_batches(
    data: &Path,
    src_tok: &Tokenizer,
    tgt_tok: &Tokenizer,
    val_fraction: f64,
    seed: u64,
) -> Result<PairBatches> {
    let texts = read_pairs(data)?;
    let pairs: Vec<Pair> = tokenize_pairs(&texts, src_tok, tgt_tok, &data.display().to_string())?;
    let ids = special_ids(tgt_tok, "the target tokenizer")?;
    special_ids(src_tok, "the source tokenizer")?;
    PairBatches::new(pairs, val_fraction, seed, ids)
}

/// Plan a new seq2seq run.
pub fn plan_seq2seq(opts: &Seq2seqOptions) -> Result<Seq2seqPlan> {
    check_val_fraction(opts.val_fraction)?;
    let run = fresh_run_dir(&opts.out, opts.overwrite)?;
    let texts = read_pairs(&opts.data)?;
    let sources: Vec<String> = texts.iter().map(|p| p.source.clone()).collect();
    let targets: Vec<String> = texts.iter().map(|p| p.target.clone()).collect();
    let (src_tok, tgt_tok) = match &opts.target_tokenizer {
        None => {
            let docs: Vec<String> = sources.iter().chain(&targets).cloned().collect();
            let t = pairs::build_tokenizer(&opts.tokenizer, opts.normalize, &docs)?;
            (t.clone(), t)
        }
        Some(tspec) => (
            pairs::build_tokenizer(&opts.tokenizer, opts.normalize, &sources)?,
            pairs::build_tokenizer(tspec, opts.normalize, &targets)?,
        ),
    };
    let shared = opts.target_tokenizer.is_none();
    save_tokenizers(&run.root, &src_tok, &tgt_tok, shared)?;
    let batches = pair_batches(
        &opts.data,
        &src_tok,
        &tgt_tok,
        opts.val_fraction,
        opts.train.seed,
    )?;
    let ids = batches.ids;
    let m = &opts.model;
    let layers = DEFAULT_LAYERS;
    let d = m.d_model.unwrap_or(DEFAULT_D_MODEL);
    let mut config = Seq2seqConfig::new(
        d,
        m.heads.unwrap_or(DEFAULT_HEADS),
        m.encoder_layers.unwrap_or(layers),
        m.decoder_layers.unwrap_or(layers),
        m.ffn.unwrap_or(4 * d),
        vocab(&src_tok),
        vocab(&tgt_tok),
        DEFAULT_MAX_LEN.max(batches.s).max(batches.t),
    );
    config.pad_id = ids.pad;
    config.bos_id = ids.bos;
    config.eos_id = ids.eos;
    config.validate(
        "model flags (--n-embd, --n-head, --n-layer, --encoder-layers, --decoder-layers, --ffn)",
    )?;
    let mut train = opts.train.clone();
    train.block_size = batches.t;
    train.validate()?;
    let spec = Seq2seqRunSpec {
        arch: "seq2seq".into(),
        model: config.to_json(),
        tokenizer: opts.tokenizer.to_string(),
        target_tokenizer: opts.target_tokenizer.as_ref().map(|t| t.to_string()),
        data: opts.data.display().to_string(),
        data_fingerprint: file_fingerprint(&opts.data)?,
        val_fraction: opts.val_fraction,
        source_len: batches.s,
        train,
    };
    let json = serde_json::to_string_pretty(&spec).expect("spec serializes");
    write_atomic(&run.settings(), json.as_bytes())?;
    let notes = vec![
        format!("data: {}: {}", opts.data.display(), batches.describe()),
        if shared {
            format!(
                "tokenizer: {} shared by both sides, {} tokens",
                opts.tokenizer,
                vocab(&src_tok)
            )
        } else {
            format!(
                "tokenizers: source {} tokens, target {} tokens",
                vocab(&src_tok),
                vocab(&tgt_tok)
            )
        },
    ];
    Ok(Seq2seqPlan {
        run,
        spec,
        config,
        src_tok,
        tgt_tok,
        batches,
        resume: None,
        notes,
    })
}

/// Plan the continuation of the seq2seq run in `out` from its latest checkpoint,
/// optionally with a new total of `steps`.
pub fn plan_seq2seq_resume(out: &Path, steps: Option<u64>) -> Result<Seq2seqPlan> {
    let run = RunDir::create(out)?;
    let settings = run.settings();
    let text = std::fs::read_to_string(&settings).map_err(|e| Error::Io {
        path: settings.display().to_string(),
        source: e,
    })?;
    let mut spec: Seq2seqRunSpec = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: not a seq2seq run: {e}", settings.display())))?;
    let ck = find_checkpoint(&run.latest()).ok_or_else(|| {
        Error::Invalid(format!(
            "--resume: {} holds no checkpoint to resume from",
            out.display()
        ))
    })?;
    if let Some(s) = steps {
        spec.train.steps = s;
        spec.train.validate()?;
    }
    let config = spec.config(&settings.display().to_string())?;
    let data = PathBuf::from(&spec.data);
    if file_fingerprint(&data)? != spec.data_fingerprint {
        return Err(Error::Invalid(format!(
            "--resume: {} changed since the run started; resuming would not draw the same batches",
            data.display()
        )));
    }
    let (src_tok, tgt_tok) = load_tokenizers(&run.root)?;
    let batches = pair_batches(
        &data,
        &src_tok,
        &tgt_tok,
        spec.val_fraction,
        spec.train.seed,
    )?;
    if batches.s != spec.source_len || batches.t != spec.train.block_size {
        return Err(Error::Invalid(format!(
            "--resume: the pairs now give S {} and T {}, the run was planned with {} and {}",
            batches.s, batches.t, spec.source_len, spec.train.block_size
        )));
    }
    let notes = vec![format!("resuming {} from {}", out.display(), ck.display())];
    Ok(Seq2seqPlan {
        run,
        spec,
        config,
        src_tok,
        tgt_tok,
        batches,
        resume: Some(ck),
        notes,
    })
}

fn shapes(cfg: &Seq2seqConfig) -> ParamShapes {
    seq2seq_params(cfg)
        .into_iter()
        .map(|p| (p.spec.name, p.spec.shape))
        .collect()
}

fn batch_ref(b: &Seq2seqBatch) -> Seq2seqBatchRef<'_> {
    Seq2seqBatchRef {
        src: &b.src,
        src_pad: &b.src_pad,
        tgt_in: &b.tgt_in,
        tgt_out: &b.tgt_out,
    }
}

#[allow(clippy::too_many_arguments)]
async fn save(
    ctx: &GpuContext,
    trainer: &Seq2seqTrainer,
    plan_toks: (&Tokenizer, &Tokenizer, bool),
    state: &TrainerState,
    dir: &Path,
    full: bool,
) -> Result<()> {
    let tmp = begin_checkpoint(dir)?;
    trainer.model.save(ctx, &tmp).await?;
    save_tokenizers(&tmp, plan_toks.0, plan_toks.1, plan_toks.2)?;
    if full {
        let m = trainer.m.read_all(ctx).await?;
        let v = trainer.v.read_all(ctx).await?;
        let bytes = optimizer_bytes(&shapes(&trainer.model.config), &m, &v, state.step)?;
        write_atomic(&tmp.join("optimizer.safetensors"), &bytes)?;
    }
    commit_checkpoint(&tmp, dir, state)
}

/// Mean loss over the evaluation batches, each weighted by its counted targets.
async fn evaluate(
    ctx: &GpuContext,
    trainer: &Seq2seqTrainer,
    batches: &[Seq2seqBatch],
) -> Result<f32> {
    let (mut sum, mut n) = (0f64, 0usize);
    for b in batches {
        let count = b.targets();
        if count == 0 {
            continue;
        }
        sum += trainer.eval_loss(ctx, &batch_ref(b)).await? as f64 * count as f64;
        n += count;
    }
    Ok((sum / n.max(1) as f64) as f32)
}

/// Greedy exact-match accuracy on `pairs`: (correct, total).
pub async fn exact_match(
    ctx: &GpuContext,
    model: &Seq2seq,
    pairs: &[Pair],
    batch: usize,
) -> Result<(usize, usize)> {
    if pairs.is_empty() {
        return Ok((0, 0));
    }
    let longest = pairs.iter().map(|p| p.target.len()).max().unwrap_or(0);
    let opts = TranslateOptions {
        beam: 1,
        max_len: (longest + 2).min(model.config.max_len),
        length_penalty: 0.0,
        stop_at_eos: true,
    };
    let sources: Vec<Vec<u32>> = pairs.iter().map(|p| p.source.clone()).collect();
    let hyps = translate(ctx, model, &sources, &opts, batch).await?;
    let correct = hyps
        .iter()
        .zip(pairs)
        .filter(|(h, p)| h.finished && h.tokens == p.target)
        .count();
    Ok((correct, pairs.len()))
}

/// The encoder–decoder's side of the shared loop.
struct Seq2seqSteps<'a> {
    trainer: Seq2seqTrainer,
    batches: &'a PairBatches,
    eval_set: Vec<Seq2seqBatch>,
    /// K·B pairs per step.
    rows: usize,
    toks: (&'a Tokenizer, &'a Tokenizer, bool),
}

impl Steps for Seq2seqSteps<'_> {
    async fn step(&mut self, ctx: &GpuContext, step: u64, lr: f32) -> Result<(f32, usize)> {
        let batch = self.batches.train_batch(step, self.rows);
        let loss = self.trainer.step(ctx, &batch_ref(&batch), lr).await?;
        Ok((loss, batch.targets()))
    }

    async fn evaluate(&mut self, ctx: &GpuContext) -> Result<f32> {
        evaluate(ctx, &self.trainer, &self.eval_set).await
    }

    async fn save(
        &self,
        ctx: &GpuContext,
        state: &TrainerState,
        dir: &Path,
        full: bool,
    ) -> Result<()> {
        save(ctx, &self.trainer, self.toks, state, dir, full).await
    }
}

/// The result of [`train_seq2seq`].
pub struct Seq2seqOutcome {
    pub model: Seq2seq,
    pub state: TrainerState,
    pub run: RunDir,
    pub losses: Vec<f32>,
    /// Greedy exact match on (up to `MAX_ACCURACY_PAIRS`) validation pairs at the end.
    pub exact_match: (usize, usize),
    pub src_tok: Tokenizer,
    pub tgt_tok: Tokenizer,
}

/// Validation pairs decoded for the final exact-match accuracy.
pub const MAX_ACCURACY_PAIRS: usize = 1000;

/// Train `plan` until its last step, or until `stop_at` steps are done.
pub async fn train_seq2seq(
    ctx: &GpuContext,
    plan: Seq2seqPlan,
    stop_at: Option<u64>,
    obs: &mut dyn Observer,
) -> Result<Seq2seqOutcome> {
    let Seq2seqPlan {
        run,
        spec,
        config,
        src_tok,
        tgt_tok,
        batches,
        resume,
        notes,
    } = plan;
    for n in &notes {
        obs.note(n);
    }
    let ts = &spec.train;
    let shared = spec.target_tokenizer.is_none();
    let toks = (&src_tok, &tgt_tok, shared);
    let model = match &resume {
        None => Seq2seq::init(ctx, config.clone(), ts.seed)?,
        Some(dir) => Seq2seq::load(ctx, dir)?,
    };
    if model.config != config {
        return Err(Error::Invalid(format!(
            "{}: the checkpoint's config.json differs from the run's model",
            run.root.display()
        )));
    }
    let (b, s, t) = (ts.batch_size, batches.s, batches.t);
    if ts.precision != crate::model::half::Precision::F32 {
        return Err(Error::Invalid(format!(
            "--precision {}: the f16 path is GPT-2's only for now; train this model in f32",
            ts.precision
        )));
    }
    let step_config = StepConfig {
        grad_accum: ts.grad_accum,
        dropout: ts.dropout,
        seed: stream_seed(ts.seed, STREAM_DROPOUT, 0),
        ..StepConfig::default()
    };
    let mut trainer = Seq2seqTrainer::with_config(ctx, model, (b, s, t), ts.optim(), step_config)?;
    let mut state = match &resume {
        None => TrainerState::fresh(ts.seed),
        Some(dir) => {
            let state = TrainerState::read(&dir.join("trainer.json"))?;
            let (m, v) = read_optimizer(&dir.join("optimizer.safetensors"), &shapes(&config))?;
            trainer.m.write_all(ctx, &m)?;
            trainer.v.write_all(ctx, &v)?;
            trainer.step = u32::try_from(state.step).map_err(|_| {
                Error::Invalid(format!(
                    "{}: step {} is too large",
                    dir.display(),
                    state.step
                ))
            })?;
            state
        }
    };
    let n_params: usize = seq2seq_params(&config).iter().map(|p| p.spec.numel()).sum();
    obs.note(&format!(
        "model: encoder–decoder, {} + {} layers, {} heads, {} channels, feed-forward {}, vocabulary {} → {}: {:.2}M parameters",
        config.encoder_layers,
        config.decoder_layers,
        config.heads,
        config.d_model,
        config.ffn,
        config.src_vocab,
        config.tgt_vocab,
        n_params as f64 / 1e6
    ));
    obs.note(&format!(
        "training: {} steps of {} × {} pairs (S {s}, T {t}), lr {:e} (warmup {}, cosine to {:e} at step {}), weight decay {}, clip {}",
        ts.steps,
        ts.grad_accum,
        ts.batch_size,
        ts.schedule.lr,
        ts.schedule.warmup_steps,
        ts.schedule.min_lr,
        ts.schedule.decay_steps,
        ts.weight_decay,
        ts.grad_clip
    ));
    obs.note(&format!("{}", trainer.memory(ctx)));
    obs.note(&format!("adapter: {}", ctx.adapter_name()));
    obs.note(&format!("run directory: {}", run.root.display()));
    let eval_set: Vec<Seq2seqBatch> = batches
        .eval_batches(b)
        .into_iter()
        .take(ts.eval_batches)
        .collect();
    let title = format!("seq2seq — {}", run.root.display());
    let mut steps = Seq2seqSteps {
        trainer,
        batches: &batches,
        eval_set,
        rows: ts.grad_accum * b,
        toks,
    };
    let losses = drive(
        ctx,
        &mut steps,
        &run,
        ts,
        &mut state,
        resume.is_some(),
        stop_at,
        &title,
        obs,
    )
    .await?;
    let trainer = steps.trainer;
    let held_out = if batches.val.is_empty() {
        &batches.train
    } else {
        &batches.val
    };
    let n = held_out.len().min(MAX_ACCURACY_PAIRS);
    let exact = exact_match(ctx, &trainer.model, &held_out[..n], 64).await?;
    let Seq2seqTrainer { model, .. } = trainer;
    Ok(Seq2seqOutcome {
        model,
        state,
        run,
        losses,
        exact_match: exact,
        src_tok,
        tgt_tok,
    })
}
