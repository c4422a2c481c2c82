//! BERT runs: masked-LM pretraining (`wgformer train --arch bert --objective mlm`) and
//! sequence-classification fine-tuning (`wgformer finetune --arch bert --task classify`),
//! through the shared loop (`train::driver`): AdamW with warmup and cosine decay,
//! clipping, accumulation, evaluation, metrics, plot, atomic checkpoints, exact resume.
//!
//! Pretraining tokenizes the corpus once with a WordPiece tokenizer (trained on the
//! corpus, `wordpiece:N`, or a given `tokenizer.json`, or the `--init-from` model's) and
//! masks 15 % of each window's tokens (80/10/10, `train::mlm`); the loss counts the
//! masked positions only. Fine-tuning reads `{"text", "label"}` lines (`train::classify`),
//! puts a classifier on the pooled [CLS] vector of a pretrained BERT, and reports
//! validation accuracy at each evaluation and at the end.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Needs};
use crate::model::bert::params::bert_params;
use crate::model::bert::trainer::{BertBatchRef, BertTrainer};
use crate::model::bert::{Bert, BertConfig, Head};
use crate::model::checkpoint::write_atomic;
use crate::model::gpt2::StepConfig;
use crate::train::classify::{label_set, read_labeled, tokenize_labeled, ClassBatch, ClassBatches};
use crate::train::data::{stream_seed, Corpus};
use crate::train::driver::{drive, Steps};
use crate::train::mlm::{bert_specials, BertBatch, MlmBatches, CLS, MASK, PAD, SEP, UNK};
use crate::train::run::{
    check_val_fraction, file_fingerprint, fresh_run_dir, Observer, TrainSettings, STREAM_DROPOUT,
};
use crate::train::state::{
    begin_checkpoint, commit_checkpoint, find_checkpoint, optimizer_bytes, read_optimizer,
    resolve_model_dir, ParamShapes, RunDir, TrainerState,
};

/// What a BERT run optimizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Masked language modelling on raw text.
    Mlm,
    /// Sequence classification on labeled text.
    Classify,
}

pub const DEFAULT_WORDPIECE: usize = 2000;
pub const DEFAULT_HIDDEN: usize = 64;
pub const DEFAULT_LAYERS: usize = 2;
pub const DEFAULT_HEADS: usize = 4;
pub const DEFAULT_BLOCK: usize = 64;
/// BERT's masking rate.
pub const MASK_PROB: f64 = 0.15;

/// A BERT run as the library sees it.
#[derive(Clone, Debug)]
pub struct BertOptions {
    pub objective: Objective,
    /// MLM: a corpus (file or directory, as `wgformer train`); classify: a JSONL of
    /// {"text", "label"}.
    pub data: PathBuf,
    pub out: PathBuf,
    /// `wordpiece:N` (trained on the corpus) or a tokenizer.json; None: the init model's,
    /// else wordpiece:2000.
    pub tokenizer: Option<String>,
    /// A BERT directory (or run) to start from; classification needs one.
    pub init_from: Option<PathBuf>,
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub heads: Option<usize>,
    /// T; classify: inputs longer are truncated. Default 64 (at most the model's positions).
    pub block_size: Option<usize>,
    pub val_fraction: f64,
    pub train: TrainSettings,
    pub overwrite: bool,
}

/// What a BERT run is (`run.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BertRunSpec {
    /// Always "bert".
    pub arch: String,
    pub objective: Objective,
    pub model: BertConfig,
    pub tokenizer: String,
    pub data: String,
    pub data_fingerprint: u64,
    pub val_fraction: f64,
    pub init_from: Option<String>,
    /// `block_size` is T.
    pub train: TrainSettings,
}

/// Where a run's batches come from.
pub enum BertData {
    Mlm(MlmBatches),
    Classify(ClassBatches),
}

/// Where the weights come from.
pub enum BertStart {
    Fresh,
    From(PathBuf),
    Resume(PathBuf),
}

pub struct BertPlan {
    pub run: RunDir,
    pub spec: BertRunSpec,
    pub tokenizer: Tokenizer,
    pub data: BertData,
    pub start: BertStart,
    pub notes: Vec<String>,
}

impl BertPlan {
    pub fn needs(&self) -> Needs {
        Bert::needs(
            &self.spec.model,
            self.spec.train.batch_size,
            self.spec.train.block_size,
        )
    }

    fn head(&self) -> Head {
        match self.spec.objective {
            Objective::Mlm => Head::Mlm,
            Objective::Classify => {
                Head::Classify(self.spec.model.labels.as_ref().map_or(0, Vec::len))
            }
        }
    }
}

/// Is the run in `dir` a BERT run?
pub fn is_bert_run(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("arch").and_then(|a| a.as_str()) == Some("bert"))
}

/// A BERT WordPiece tokenizer of `size` tokens built from `docs`: BERT's normalizer
/// (lowercase, accents stripped, Chinese characters split), pre-tokenizer and
/// `[CLS] … [SEP]` template, with [PAD] [UNK] [CLS] [SEP] [MASK] as ids 0–4. The
/// vocabulary is deterministic (the tokenizers crate's trainer breaks frequency ties in
/// hash order, so two runs would differ): every character, as a word start and as a
/// `##` continuation, then the most frequent whole words, ties in code-point order.
/// Words outside it are spelled in characters.
pub fn train_wordpiece(size: usize, docs: &[String]) -> Result<Tokenizer> {
    use std::collections::HashMap;
    use tokenizers::{Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let specials = [PAD, UNK, CLS, SEP, MASK];
    let err =
        |e: tokenizers::Error| Error::Invalid(format!("building the WordPiece vocabulary: {e}"));
    let normalizer = BertNormalizer::new(true, true, None, true);
    let mut words: HashMap<String, u64> = HashMap::new();
    for d in docs {
        for chunk in crate::train::tokenize::split_chunks(d, 1 << 16) {
            let mut pre = PreTokenizedString::from(chunk);
            pre.normalize(|n| normalizer.normalize(n)).map_err(err)?;
            BertPreTokenizer.pre_tokenize(&mut pre).map_err(err)?;
            for (w, _, _) in pre.get_splits(OffsetReferential::Normalized, OffsetType::Char) {
                *words.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    let mut pieces: HashMap<String, u64> = HashMap::new();
    for (w, &n) in &words {
        for (i, c) in w.chars().enumerate() {
            let piece = if i == 0 {
                c.to_string()
            } else {
                format!("##{c}")
            };
            *pieces.entry(piece).or_default() += n;
        }
    }
    let ranked = |m: HashMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.into_iter().map(|(s, _)| s)
    };
    let mut vocab: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
    vocab.extend(ranked(pieces));
    if size < vocab.len() {
        return Err(Error::Invalid(format!(
            "--tokenizer wordpiece:{size}: the corpus needs at least {} tokens (5 specials and its characters)",
            vocab.len()
        )));
    }
    let have: std::collections::HashSet<String> = vocab.iter().cloned().collect();
    let room = size - vocab.len();
    vocab.extend(
        ranked(words)
            .filter(|w| w.chars().count() > 1 && !have.contains(w))
            .take(room),
    );
    let table: tokenizers::models::bpe::Vocab = vocab
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as u32))
        .collect();
    let model = WordPiece::builder()
        .vocab(table)
        .unk_token(UNK.into())
        .build()
        .map_err(|e| Error::Invalid(format!("WordPiece: {e}")))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(normalizer));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    tok.add_special_tokens(
        &specials
            .iter()
            .map(|s| AddedToken::from(*s, true))
            .collect::<Vec<_>>(),
    );
    let template = TemplateProcessing::builder()
        .try_single(format!("{CLS}:0 $A:0 {SEP}:0"))
        .and_then(|b| b.try_pair(format!("{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1")))
        .map_err(|e| Error::Invalid(format!("template: {e}")))?
        .special_tokens(vec![(CLS, 2), (SEP, 3)])
        .build()
        .map_err(|e| Error::Invalid(format!("template: {e}")))?;
    tok.with_post_processor(Some(template));
    Ok(tok)
}

/// The tokenizer `spec` asks for (a file, or `wordpiece:N` trained on `docs`).
fn tokenizer_for(spec: &str, docs: &[String]) -> Result<Tokenizer> {
    if let Some(n) = spec.strip_prefix("wordpiece:") {
        let n: usize = n.parse().map_err(|_| {
            Error::Invalid(format!("--tokenizer {spec}: expected wordpiece:<size>"))
        })?;
        return train_wordpiece(n, docs);
    }
    let p = Path::new(spec);
    if p.is_file() {
        return crate::tokenizer::load(p);
    }
    Err(Error::Invalid(format!(
        "--tokenizer {spec:?}: for --arch bert expected wordpiece:<size> or the path of a BERT tokenizer.json"
    )))
}

/// Ids of `text` without special tokens, in chunks (the corpus can be large).
fn encode_plain(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for piece in crate::train::tokenize::split_chunks(text, 1 << 16) {
        let enc = tok
            .encode(piece, false)
            .map_err(|e| Error::Invalid(format!("tokenizing the corpus: {e}")))?;
        out.extend_from_slice(enc.get_ids());
    }
    Ok(out)
}

fn mlm_batches(
    docs: &[String],
    tok: &Tokenizer,
    val_fraction: f64,
    seed: u64,
    vocab: usize,
    t: usize,
) -> Result<MlmBatches> {
    let specials = bert_specials(tok, "the tokenizer")?;
    let mut ids = Vec::new();
    for d in docs {
        ids.extend(encode_plain(tok, d)?);
    }
    let split = ids.len() - ((ids.len() as f64 * val_fraction).round() as usize).min(ids.len());
    let val = ids.split_off(split);
    let m = MlmBatches::new(ids, val, seed, specials, vocab, MASK_PROB)?;
    m.check(t)?;
    Ok(m)
}

fn class_batches(
    path: &Path,
    tok: &Tokenizer,
    labels: &[String],
    val_fraction: f64,
    seed: u64,
    t: usize,
) -> Result<ClassBatches> {
    let items = read_labeled(path)?;
    let specials = bert_specials(tok, "the tokenizer")?;
    let examples = tokenize_labeled(
        &items,
        labels,
        tok,
        specials,
        t,
        &path.display().to_string(),
    )?;
    ClassBatches::new(examples, val_fraction, seed, t, specials)
}

/// Plan a new BERT run.
pub fn plan_bert(opts: &BertOptions) -> Result<BertPlan> {
    check_val_fraction(opts.val_fraction)?;
    let init = opts
        .init_from
        .as_deref()
        .map(resolve_model_dir)
        .transpose()?;
    if opts.objective == Objective::Classify && init.is_none() {
        return Err(Error::Invalid(
            "--task classify fine-tunes a pretrained BERT: give --init-from (a BERT directory such as \
             all-MiniLM-L6-v2, or a `train --arch bert` run)"
                .into(),
        ));
    }
    if init.is_some() && (opts.hidden.is_some() || opts.layers.is_some() || opts.heads.is_some()) {
        return Err(Error::Invalid(
            "--n-embd/--n-layer/--n-head: the --init-from model fixes the sizes".into(),
        ));
    }
    let run = fresh_run_dir(&opts.out, opts.overwrite)?;
    let mut notes = Vec::new();
    let (tok, tok_desc, docs) = match opts.objective {
        Objective::Mlm => {
            let corpus = Corpus::read(&opts.data)?;
            notes.push(format!(
                "data: {} ({} documents)",
                corpus.source,
                corpus.docs.len()
            ));
            let (tok, desc) = match (&opts.tokenizer, &init) {
                (Some(spec), _) => (tokenizer_for(spec, &corpus.docs)?, spec.clone()),
                (None, Some(dir)) => (
                    crate::tokenizer::load(&dir.join("tokenizer.json"))?,
                    format!("{}/tokenizer.json", dir.display()),
                ),
                (None, None) => {
                    let spec = format!("wordpiece:{DEFAULT_WORDPIECE}");
                    (tokenizer_for(&spec, &corpus.docs)?, spec)
                }
            };
            (tok, desc, Some(corpus.docs))
        }
        Objective::Classify => {
            let dir = init.as_ref().expect("checked above");
            let tok = match &opts.tokenizer {
                Some(spec) => tokenizer_for(spec, &[])?,
                None => crate::tokenizer::load(&dir.join("tokenizer.json"))?,
            };
            (
                tok,
                opts.tokenizer
                    .clone()
                    .unwrap_or_else(|| format!("{}/tokenizer.json", dir.display())),
                None,
            )
        }
    };
    let vocab = crate::train::tokenize::vocab_size(&tok);
    let mut model = match &init {
        Some(dir) => BertConfig::from_file(&dir.join("config.json"))?,
        None => BertConfig::new(
            vocab,
            opts.hidden.unwrap_or(DEFAULT_HIDDEN),
            opts.layers.unwrap_or(DEFAULT_LAYERS),
            opts.heads.unwrap_or(DEFAULT_HEADS),
            opts.block_size.unwrap_or(DEFAULT_BLOCK).max(DEFAULT_BLOCK),
        ),
    };
    if vocab > model.vocab_size {
        return Err(Error::Invalid(format!(
            "the tokenizer has {vocab} tokens but the model only {}; they do not belong together",
            model.vocab_size
        )));
    }
    let t = opts
        .block_size
        .unwrap_or(DEFAULT_BLOCK.min(model.max_position_embeddings));
    if t > model.max_position_embeddings || t < 3 {
        return Err(Error::Invalid(format!(
            "--block-size {t} must lie in 3..={} (the model's positions)",
            model.max_position_embeddings
        )));
    }
    let seed = opts.train.seed;
    let data = match opts.objective {
        Objective::Mlm => {
            model.labels = None;
            let docs = docs.expect("read above");
            BertData::Mlm(mlm_batches(
                &docs,
                &tok,
                opts.val_fraction,
                stream_seed(seed, 20, 0),
                model.vocab_size,
                t,
            )?)
        }
        Objective::Classify => {
            let items = read_labeled(&opts.data)?;
            let labels = label_set(&items);
            if labels.len() < 2 {
                return Err(Error::Invalid(format!(
                    "{}: needs at least two labels, found {labels:?}",
                    opts.data.display()
                )));
            }
            model.labels = Some(labels.clone());
            BertData::Classify(class_batches(
                &opts.data,
                &tok,
                &labels,
                opts.val_fraction,
                seed,
                t,
            )?)
        }
    };
    model.validate("the model")?;
    crate::train::tokenize::save(&tok, &run.tokenizer())?;
    let mut train = opts.train.clone();
    train.block_size = t;
    train.validate()?;
    let spec = BertRunSpec {
        arch: "bert".into(),
        objective: opts.objective,
        model,
        tokenizer: tok_desc.clone(),
        data: opts.data.display().to_string(),
        data_fingerprint: data_fingerprint(&opts.data)?,
        val_fraction: opts.val_fraction,
        init_from: init.as_ref().map(|d| d.display().to_string()),
        train,
    };
    let json = serde_json::to_string_pretty(&spec).expect("spec serializes");
    write_atomic(&run.settings(), json.as_bytes())?;
    notes.push(format!("tokenizer: {tok_desc}, {vocab} tokens"));
    notes.push(match &data {
        BertData::Mlm(m) => m.describe(),
        BertData::Classify(c) => c.describe(),
    });
    Ok(BertPlan {
        run,
        spec,
        tokenizer: tok,
        data,
        start: init.map_or(BertStart::Fresh, BertStart::From),
        notes,
    })
}

fn data_fingerprint(path: &Path) -> Result<u64> {
    if path.is_dir() {
        let c = Corpus::read(path)?;
        Ok(c.fingerprint())
    } else {
        file_fingerprint(path)
    }
}

/// Plan the continuation of the BERT run in `out`.
pub fn plan_bert_resume(out: &Path, steps: Option<u64>) -> Result<BertPlan> {
    let run = RunDir::create(out)?;
    let settings = run.settings();
    let text = std::fs::read_to_string(&settings).map_err(|e| Error::Io {
        path: settings.display().to_string(),
        source: e,
    })?;
    let mut spec: BertRunSpec = serde_json::from_str(&text)
        .map_err(|e| Error::Invalid(format!("{}: not a BERT run: {e}", settings.display())))?;
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
    let data = PathBuf::from(&spec.data);
    if data_fingerprint(&data)? != spec.data_fingerprint {
        return Err(Error::Invalid(format!(
            "--resume: {} changed since the run started; resuming would not draw the same batches",
            data.display()
        )));
    }
    let tok = crate::tokenizer::load(&run.tokenizer())?;
    let t = spec.train.block_size;
    let seed = spec.train.seed;
    let batches = match spec.objective {
        Objective::Mlm => {
            let corpus = Corpus::read(&data)?;
            BertData::Mlm(mlm_batches(
                &corpus.docs,
                &tok,
                spec.val_fraction,
                stream_seed(seed, 20, 0),
                spec.model.vocab_size,
                t,
            )?)
        }
        Objective::Classify => {
            let labels = spec.model.labels.clone().unwrap_or_default();
            BertData::Classify(class_batches(
                &data,
                &tok,
                &labels,
                spec.val_fraction,
                seed,
                t,
            )?)
        }
    };
    Ok(BertPlan {
        run,
        spec,
        tokenizer: tok,
        data: batches,
        start: BertStart::Resume(ck.clone()),
        notes: vec![format!("resuming {} from {}", out.display(), ck.display())],
    })
}

fn shapes(cfg: &BertConfig, head: Head) -> ParamShapes {
    bert_params(cfg, head)
        .into_iter()
        .map(|p| (p.spec.name, p.spec.shape))
        .collect()
}

fn mlm_ref(b: &BertBatch) -> BertBatchRef<'_> {
    BertBatchRef {
        ids: &b.ids,
        types: &b.token_types,
        mask: &b.attn_mask,
        targets: &b.targets,
    }
}

fn class_ref(b: &ClassBatch) -> BertBatchRef<'_> {
    BertBatchRef {
        ids: &b.ids,
        types: &b.token_types,
        mask: &b.attn_mask,
        targets: &b.labels,
    }
}

/// Classification accuracy of the model in `trainer` over `batches`: (correct, total).
pub async fn accuracy(
    ctx: &GpuContext,
    trainer: &BertTrainer,
    batches: &[ClassBatch],
) -> Result<(usize, usize)> {
    let (mut ok, mut n) = (0, 0);
    for b in batches {
        trainer.eval_loss(ctx, &class_ref(b)).await?;
        let logits = trainer.class_logits(ctx).await?;
        let nl = logits.len() / b.labels.len();
        for (r, &y) in b.labels.iter().enumerate().take(b.rows) {
            let row = &logits[r * nl..(r + 1) * nl];
            let pred = row
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m })
                .0;
            ok += (pred as i32 == y) as usize;
            n += 1;
        }
    }
    Ok((ok, n))
}

struct BertSteps<'a> {
    trainer: BertTrainer,
    data: &'a BertData,
    mlm_eval: Vec<BertBatch>,
    class_eval: Vec<ClassBatch>,
    rows: usize,
    t: usize,
    tok: &'a Tokenizer,
    last_accuracy: Option<(usize, usize)>,
}

impl Steps for BertSteps<'_> {
    async fn step(&mut self, ctx: &GpuContext, step: u64, lr: f32) -> Result<(f32, usize)> {
        match self.data {
            BertData::Mlm(m) => {
                let b = m.train_batch(step, self.rows, self.t);
                let loss = self.trainer.step(ctx, &mlm_ref(&b), lr).await?;
                Ok((loss, b.counted()))
            }
            BertData::Classify(c) => {
                let b = c.train_batch(step, self.rows);
                let loss = self.trainer.step(ctx, &class_ref(&b), lr).await?;
                Ok((loss, b.rows))
            }
        }
    }

    async fn evaluate(&mut self, ctx: &GpuContext) -> Result<f32> {
        let (mut sum, mut n) = (0f64, 0usize);
        for b in &self.mlm_eval {
            let w = b.counted();
            if w > 0 {
                sum += self.trainer.eval_loss(ctx, &mlm_ref(b)).await? as f64 * w as f64;
                n += w;
            }
        }
        for b in &self.class_eval {
            let w = b.labels.iter().filter(|&&y| y >= 0).count();
            if w > 0 {
                sum += self.trainer.eval_loss(ctx, &class_ref(b)).await? as f64 * w as f64;
                n += w;
            }
        }
        Ok((sum / n.max(1) as f64) as f32)
    }

    async fn eval_note(&mut self, ctx: &GpuContext) -> Result<Option<String>> {
        if self.class_eval.is_empty() {
            return Ok(None);
        }
        let (ok, n) = accuracy(ctx, &self.trainer, &self.class_eval).await?;
        self.last_accuracy = Some((ok, n));
        Ok(Some(format!(
            "validation accuracy {ok}/{n} = {:.1}%",
            100.0 * ok as f64 / n.max(1) as f64
        )))
    }

    async fn save(
        &self,
        ctx: &GpuContext,
        state: &TrainerState,
        dir: &Path,
        full: bool,
    ) -> Result<()> {
        let tmp = begin_checkpoint(dir)?;
        self.trainer.model.save(ctx, &tmp).await?;
        crate::train::tokenize::save(self.tok, &tmp.join("tokenizer.json"))?;
        if full {
            let m = self.trainer.m.read_all(ctx).await?;
            let v = self.trainer.v.read_all(ctx).await?;
            let model = &self.trainer.model;
            let bytes = optimizer_bytes(&shapes(&model.config, model.head), &m, &v, state.step)?;
            write_atomic(&tmp.join("optimizer.safetensors"), &bytes)?;
        }
        commit_checkpoint(&tmp, dir, state)
    }
}

/// The result of [`train_bert`].
pub struct BertOutcome {
    pub model: Bert,
    pub state: TrainerState,
    pub run: RunDir,
    pub losses: Vec<f32>,
    /// Classification: validation accuracy at the end (correct, total).
    pub accuracy: Option<(usize, usize)>,
    pub tokenizer: Tokenizer,
}

/// Train `plan` until its last step, or until `stop_at` steps are done.
pub async fn train_bert(
    ctx: &GpuContext,
    plan: BertPlan,
    stop_at: Option<u64>,
    obs: &mut dyn Observer,
) -> Result<BertOutcome> {
    for n in &plan.notes {
        obs.note(n);
    }
    let head = plan.head();
    let BertPlan {
        run,
        spec,
        tokenizer,
        data,
        start,
        ..
    } = plan;
    let ts = &spec.train;
    let cfg = spec.model.clone();
    let model = match &start {
        BertStart::Fresh => Bert::init(ctx, cfg.clone(), head, ts.seed)?,
        BertStart::From(dir) => {
            let m = Bert::load(ctx, dir)?;
            if m.head == head {
                m
            } else {
                m.with_head(ctx, head, cfg.labels.clone(), stream_seed(ts.seed, 21, 0))
                    .await?
            }
        }
        BertStart::Resume(dir) => Bert::load(ctx, dir)?,
    };
    if model.config != cfg || model.head != head {
        return Err(Error::Invalid(format!(
            "{}: the checkpoint's model differs from the run's (config.json or head)",
            run.root.display()
        )));
    }
    let t = ts.block_size;
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
    let mut trainer =
        BertTrainer::with_config(ctx, model, (ts.batch_size, t), ts.optim(), step_config)?;
    let mut state = match &start {
        BertStart::Resume(dir) => {
            let state = TrainerState::read(&dir.join("trainer.json"))?;
            let (m, v) = read_optimizer(&dir.join("optimizer.safetensors"), &shapes(&cfg, head))?;
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
        _ => TrainerState::fresh(ts.seed),
    };
    let n_params: usize = bert_params(&cfg, head).iter().map(|p| p.spec.numel()).sum();
    obs.note(&format!(
        "model: BERT, {} layers, {} heads, {} channels, feed-forward {}, vocabulary {}, head {:?}: {:.2}M parameters",
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.vocab_size,
        head,
        n_params as f64 / 1e6
    ));
    obs.note(&format!("{}", trainer.memory(ctx)));
    obs.note(&format!("adapter: {}", ctx.adapter_name()));
    obs.note(&format!("run directory: {}", run.root.display()));
    let b = ts.batch_size;
    let (mlm_eval, class_eval) = match &data {
        BertData::Mlm(m) => (m.eval_batches(ts.eval_batches, b, t), Vec::new()),
        BertData::Classify(c) => (Vec::new(), c.val_batches(b)),
    };
    let title = format!(
        "BERT {} — {}",
        if head == Head::Mlm {
            "masked-LM pretraining"
        } else {
            "classification fine-tuning"
        },
        run.root.display()
    );
    let mut steps = BertSteps {
        trainer,
        data: &data,
        mlm_eval,
        class_eval,
        rows: ts.grad_accum * b,
        t,
        tok: &tokenizer,
        last_accuracy: None,
    };
    let resumed = matches!(start, BertStart::Resume(_));
    let losses = drive(
        ctx, &mut steps, &run, ts, &mut state, resumed, stop_at, &title, obs,
    )
    .await?;
    let accuracy = if steps.class_eval.is_empty() {
        None
    } else {
        Some(accuracy(ctx, &steps.trainer, &steps.class_eval).await?)
    };
    let BertSteps { trainer, .. } = steps;
    Ok(BertOutcome {
        model: trainer.model,
        state,
        run,
        losses,
        accuracy,
        tokenizer,
    })
}
