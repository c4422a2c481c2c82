//! Training data: reading a corpus (a text file, a directory of them, JSONL, or tiny
//! Shakespeare embedded from `assets/`), the token cache in the run directory (u16 or u32
//! ids, tokenized once, split into train and validation), and the batches a step
//! consumes. Pretraining batches are nanoGPT's: B random windows of T + 1 tokens of the
//! training split. Fine-tuning batches are rows of prompt → completion examples, padded
//! or packed, with the prompt's targets set to the ignore value -100.
//!
//! Every batch is a pure function of (seed, step): the RNG of step s is seeded from the
//! run's seed and s, so the data position of a run is its step, and a resumed run draws
//! exactly the batches it would have drawn. Evaluation batches are drawn once, from their
//! own stream, and are the same at every evaluation. Tokenizers are `train::tokenize`'s.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE_INDEX;
use crate::model::checkpoint::write_atomic;
use crate::rng::Rng;
use crate::train::tokenize::{encode_text, eot_id};

/// Tiny Shakespeare (Karpathy's char-rnn data set, 1.1 MB), the default corpus.
pub const TINY_SHAKESPEARE: &str = include_str!("../../assets/tinyshakespeare.txt");

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// A seed for stream `stream`, item `index` of a run seeded with `seed` (SplitMix64
/// finalizers), so each step's RNG is independent of every other step's.
pub fn stream_seed(seed: u64, stream: u64, index: u64) -> u64 {
    let mut r = Rng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let a = r.next_u64();
    Rng::new(a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64()
}

const STREAM_TRAIN: u64 = 1;
const STREAM_EVAL: u64 = 2;
const STREAM_EPOCH: u64 = 3;

/// FNV-1a, 64 bits: a fingerprint of the corpus and the tokenizer, so a token cache is
/// reused only for the data and tokenizer it was made from.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---- reading a corpus ----

/// A corpus as documents of text.
pub struct Corpus {
    pub docs: Vec<String>,
    /// Where it came from, for messages ("tiny Shakespeare (embedded)", a path).
    pub source: String,
}

impl Corpus {
    /// Tiny Shakespeare, embedded in the binary.
    pub fn tiny_shakespeare() -> Self {
        Corpus {
            docs: vec![TINY_SHAKESPEARE.to_string()],
            source: "tiny Shakespeare (embedded from assets/tinyshakespeare.txt)".into(),
        }
    }

    /// Read `path`: a `.jsonl` file of `{"text": ...}` objects, any other file as UTF-8
    /// text, or a directory of such files (every `.txt`, `.md`, `.text` and `.jsonl`
    /// under it, in path order; hidden entries skipped). Errors name the file, and the
    /// line or byte that is wrong.
    pub fn read(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
        let mut docs = Vec::new();
        if meta.is_dir() {
            let mut files = Vec::new();
            collect_files(path, &mut files)?;
            if files.is_empty() {
                return Err(Error::Invalid(format!(
                    "{}: the directory has no .txt, .md, .text or .jsonl files",
                    path.display()
                )));
            }
            for f in files {
                read_file(&f, &mut docs)?;
            }
        } else {
            read_file(path, &mut docs)?;
        }
        docs.retain(|d| !d.is_empty());
        if docs.iter().all(|d| d.trim().is_empty()) {
            return Err(Error::Invalid(format!(
                "{}: the corpus is empty (no text to train on)",
                path.display()
            )));
        }
        Ok(Corpus {
            docs,
            source: path.display().to_string(),
        })
    }

    pub fn bytes(&self) -> usize {
        self.docs.iter().map(|d| d.len()).sum()
    }

    pub fn fingerprint(&self) -> u64 {
        let parts: Vec<&[u8]> = self.docs.iter().map(|d| d.as_bytes()).collect();
        fingerprint(&parts)
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io_err(dir, e)))
        .collect::<Result<_>>()?;
    entries.sort();
    for p in entries {
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("txt" | "md" | "text" | "jsonl")
        ) {
            out.push(p);
        }
    }
    Ok(())
}

/// The bytes of `path` as UTF-8, or an error giving the line and byte offset of the
/// first invalid sequence.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Error::Invalid(format!(
            "{}: not UTF-8 text: invalid byte 0x{:02x} at byte offset {at} (line {line}); \
             convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)",
            path.display(),
            e.as_bytes()[at]
        ))
    })
}

fn read_file(path: &Path, docs: &mut Vec<String>) -> Result<()> {
    let text = read_utf8(path)?;
    if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
        docs.push(text);
        return Ok(());
    }
    #[derive(Deserialize)]
    struct Line {
        text: String,
    }
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line).map_err(|e| {
            Error::Invalid(format!(
                "{} line {}: expected a JSON object with a \"text\" string: {e}",
                path.display(),
                i + 1
            ))
        })?;
        docs.push(l.text);
    }
    Ok(())
}

// ---- the token cache ----

/// Metadata of `tokens.bin`, stored beside it as `tokens.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TokenCacheMeta {
    /// "u16" or "u32": the width of each little-endian id in tokens.bin.
    pub dtype: String,
    pub tokens: usize,
    /// The first `train_tokens` ids are the training split, the rest validation.
    pub train_tokens: usize,
    pub corpus_fingerprint: u64,
    pub tokenizer_fingerprint: u64,
    pub source: String,
}

/// A tokenized corpus split into training and validation tokens.
pub struct TokenCache {
    pub meta: TokenCacheMeta,
    pub tokens: Vec<u32>,
}

impl TokenCache {
    pub fn train(&self) -> &[u32] {
        &self.tokens[..self.meta.train_tokens]
    }

    pub fn val(&self) -> &[u32] {
        &self.tokens[self.meta.train_tokens..]
    }

    /// Tokenize `corpus` (documents separated by `<|endoftext|>` where the vocabulary
    /// has it, otherwise by a blank line), split it (the last `val_fraction` of tokens
    /// validate) and write `tokens.bin` + `tokens.json` into `dir`, unless a cache made
    /// from the same corpus and tokenizer is already there.
    pub fn build_or_load(
        dir: &Path,
        corpus: &Corpus,
        tok: &Tokenizer,
        val_fraction: f64,
    ) -> Result<(Self, bool)> {
        let tok_json = tok
            .to_string(false)
            .map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        let corpus_fp = corpus.fingerprint();
        let tok_fp = fingerprint(&[tok_json.as_bytes()]);
        if let Ok(cache) = Self::load(dir) {
            let n = cache.meta.tokens;
            let want_train = split_point(n, val_fraction);
            if cache.meta.corpus_fingerprint == corpus_fp
                && cache.meta.tokenizer_fingerprint == tok_fp
                && cache.meta.train_tokens == want_train
            {
                return Ok((cache, true));
            }
        }
        let eot = eot_id(tok);
        let mut tokens = Vec::new();
        for (i, d) in corpus.docs.iter().enumerate() {
            if i > 0 {
                match eot {
                    Some(id) => tokens.push(id),
                    None => tokens.extend(encode_text(tok, "\n\n")?),
                }
            }
            let ids = encode_text(tok, d).map_err(|e| {
                Error::Invalid(format!("{} (document {}): {e}", corpus.source, i + 1))
            })?;
            tokens.extend(ids);
        }
        if tokens.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: the corpus has no tokens",
                corpus.source
            )));
        }
        let max = tokens.iter().copied().max().unwrap_or(0);
        let meta = TokenCacheMeta {
            dtype: if max <= u16::MAX as u32 { "u16" } else { "u32" }.into(),
            tokens: tokens.len(),
            train_tokens: split_point(tokens.len(), val_fraction),
            corpus_fingerprint: corpus_fp,
            tokenizer_fingerprint: tok_fp,
            source: corpus.source.clone(),
        };
        let bytes: Vec<u8> = if meta.dtype == "u16" {
            tokens
                .iter()
                .flat_map(|&t| (t as u16).to_le_bytes())
                .collect()
        } else {
            tokens.iter().flat_map(|&t| t.to_le_bytes()).collect()
        };
        write_atomic(&dir.join("tokens.bin"), &bytes)?;
        let json = serde_json::to_string_pretty(&meta).expect("meta serializes");
        write_atomic(&dir.join("tokens.json"), json.as_bytes())?;
        Ok((TokenCache { meta, tokens }, false))
    }

    /// Load the cache of the run in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("tokens.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| io_err(&meta_path, e))?;
        let meta: TokenCacheMeta = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", meta_path.display())))?;
        let bin = dir.join("tokens.bin");
        let bytes = std::fs::read(&bin).map_err(|e| io_err(&bin, e))?;
        let width = match meta.dtype.as_str() {
            "u16" => 2,
            "u32" => 4,
            d => {
                return Err(Error::Invalid(format!(
                    "{}: dtype {d:?}, expected u16 or u32",
                    meta_path.display()
                )))
            }
        };
        if bytes.len() != meta.tokens * width || meta.train_tokens > meta.tokens {
            return Err(Error::Invalid(format!(
                "{}: {} bytes do not hold the {} {} tokens tokens.json describes",
                bin.display(),
                bytes.len(),
                meta.tokens,
                meta.dtype
            )));
        }
        let tokens = if width == 2 {
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect()
        } else {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        Ok(TokenCache { meta, tokens })
    }

    /// Error unless both splits hold a window of T + 1 tokens and every id is below V.
    pub fn check(&self, block_size: usize, vocab: usize, val_fraction: f64) -> Result<()> {
        let need = block_size + 1;
        let pct = |f: f64| format!("{:.0}%", f * 100.0);
        if self.train().len() < need {
            return Err(Error::Invalid(format!(
                "{}: the corpus is too short: {} tokens, of which the training split ({}) has \
                 {}, fewer than one block of --block-size {block_size} + 1; use more text or a \
                 smaller --block-size",
                self.meta.source,
                self.meta.tokens,
                pct(1.0 - val_fraction),
                self.train().len()
            )));
        }
        if val_fraction > 0.0 && self.val().len() < need {
            return Err(Error::Invalid(format!(
                "{}: the corpus is too short: its validation split ({}) has {} tokens, fewer \
                 than one block of --block-size {block_size} + 1; use more text, a smaller \
                 --block-size or a larger --val-fraction",
                self.meta.source,
                pct(val_fraction),
                self.val().len()
            )));
        }
        if let Some(&bad) = self.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "{}: token id {bad} is outside the model's vocabulary of {vocab}",
                self.meta.source
            )));
        }
        Ok(())
    }
}

/// Tokens of the training split: all but the last `val_fraction`.
fn split_point(n: usize, val_fraction: f64) -> usize {
    n - ((n as f64 * val_fraction).round() as usize).min(n)
}

// ---- JSONL ----

/// What a JSON value is, for messages ("a number", "an array").
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The objects of a JSONL file, one per non-blank line, each turned into a `T` by `each`,
/// which gets the object and a maker of errors naming the file and line. `shape`
/// describes the expected object in messages, e.g. `{"source": "...", "target": "..."}`;
/// `what` names the items ("pairs") for the error of a file without any.
pub fn read_jsonl<T>(
    path: &Path,
    shape: &str,
    what: &str,
    mut each: impl FnMut(
        &serde_json::Map<String, serde_json::Value>,
        &dyn Fn(String) -> Error,
    ) -> Result<T>,
) -> Result<Vec<T>> {
    let text = read_utf8(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::Invalid(format!("{} line {}: {msg}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| at(format!("not JSON ({e}); expected an object {shape}")))?;
        let serde_json::Value::Object(obj) = &v else {
            return Err(at(format!(
                "expected a JSON object {shape}, found {}",
                json_kind(&v)
            )));
        };
        out.push(each(obj, &at)?);
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no {what} (expected JSON lines of {shape})",
            path.display()
        )));
    }
    Ok(out)
}

// ---- shuffles ----

/// A permutation of 0..n seeded by `seed` (Fisher–Yates).
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mut rng = Rng::new(seed);
    for i in (1..p.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Split `items` after a shuffle seeded by (seed, split stream `stream`): the first
/// round(n · val_fraction) validate (at least 1 when val_fraction > 0 and n ≥ 2), the
/// rest train. An error names `noun` ("pair", "example") if no training item is left.
pub fn split_shuffled<T>(
    items: Vec<T>,
    val_fraction: f64,
    seed: u64,
    stream: u64,
    noun: &str,
) -> Result<(Vec<T>, Vec<T>)> {
    let n = items.len();
    let mut n_val = ((n as f64 * val_fraction).round() as usize).min(n);
    if val_fraction > 0.0 && n >= 2 {
        n_val = n_val.max(1);
    }
    if n_val == n {
        return Err(Error::Invalid(format!(
            "{n} {noun}(s) and --val-fraction {val_fraction} leave no training {noun}; use \
             more {noun}s or a smaller --val-fraction"
        )));
    }
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut shuffled = permutation(n, stream_seed(seed, stream, 0))
        .into_iter()
        .map(|i| {
            slots[i as usize]
                .take()
                .expect("a permutation visits each once")
        });
    let val: Vec<T> = shuffled.by_ref().take(n_val).collect();
    Ok((shuffled.collect(), val))
}

/// The `rows` items at positions step·rows .. (step+1)·rows of the endless sequence of
/// epochs, epoch e visiting every item once in a permutation seeded by (seed, e): a pure
/// function of (seed, step), so a resumed run draws the same rows.
pub fn epoch_rows<T>(items: &[T], seed: u64, step: u64, rows: usize) -> Vec<&T> {
    let n = items.len() as u64;
    let mut perm: Option<(u64, Vec<u32>)> = None;
    (0..rows as u64)
        .map(|r| {
            let pos = step * rows as u64 + r;
            let epoch = pos / n;
            if perm.as_ref().is_none_or(|(e, _)| *e != epoch) {
                perm = Some((
                    epoch,
                    permutation(n as usize, stream_seed(seed, STREAM_EPOCH, epoch)),
                ));
            }
            let (_, p) = perm.as_ref().expect("permutation just made");
            &items[p[(pos % n) as usize] as usize]
        })
        .collect()
}

// ---- batches ----

/// One batch: K·B rows of T token ids and their targets (-100 = not counted).
pub struct Batch {
    pub x: Vec<i32>,
    pub y: Vec<i32>,
}

/// Where a step's batches come from.
pub trait Batches {
    /// The batch of optimizer step `step` (counted from 0): `rows` rows of length `t`.
    fn train(&self, step: u64, rows: usize, t: usize) -> Batch;
    /// `n` evaluation batches of `b` rows of length `t`, the same at every call.
    fn eval(&self, n: usize, b: usize, t: usize) -> Vec<Batch>;
    /// What is sampled, for the run's opening lines.
    fn describe(&self) -> String;
}

/// nanoGPT's sampling: each row is a window of T + 1 consecutive tokens at a uniformly
/// random offset of the split; x is its first T tokens, y its last T.
pub struct TextBatches {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub seed: u64,
}

fn windows(data: &[u32], rng: &mut Rng, rows: usize, t: usize) -> Batch {
    let mut x = Vec::with_capacity(rows * t);
    let mut y = Vec::with_capacity(rows * t);
    for _ in 0..rows {
        let i = rng.below((data.len() - t) as u64) as usize;
        x.extend(data[i..i + t].iter().map(|&v| v as i32));
        y.extend(data[i + 1..i + t + 1].iter().map(|&v| v as i32));
    }
    Batch { x, y }
}

impl Batches for TextBatches {
    fn train(&self, step: u64, rows: usize, t: usize) -> Batch {
        let mut rng = Rng::new(stream_seed(self.seed, STREAM_TRAIN, step));
        windows(&self.train, &mut rng, rows, t)
    }

    fn eval(&self, n: usize, b: usize, t: usize) -> Vec<Batch> {
        let data = if self.val.len() > t {
            &self.val
        } else {
            &self.train
        };
        let mut rng = Rng::new(stream_seed(self.seed, STREAM_EVAL, 0));
        (0..n).map(|_| windows(data, &mut rng, b, t)).collect()
    }

    fn describe(&self) -> String {
        format!(
            "{} training tokens, {} validation tokens",
            self.train.len(),
            self.val.len()
        )
    }
}

// ---- fine-tuning examples ----

/// One prompt → completion pair, tokenized.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub prompt: Vec<u32>,
    /// The completion, followed by `<|endoftext|>` where the vocabulary has it.
    pub completion: Vec<u32>,
}

impl Example {
    fn len(&self) -> usize {
        self.prompt.len() + self.completion.len()
    }
}

/// Read a JSONL file of `{"prompt": ..., "completion": ...}` objects and tokenize each
/// side. Errors name the file and line.
pub fn read_examples(path: &Path, tok: &Tokenizer) -> Result<Vec<Example>> {
    #[derive(Deserialize)]
    struct Line {
        prompt: String,
        completion: String,
    }
    let text = read_utf8(path)?;
    let eot = eot_id(tok);
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::Invalid(format!("{} line {}: {msg}", path.display(), i + 1));
        let l: Line = serde_json::from_str(line).map_err(|e| {
            at(format!(
                "expected a JSON object with \"prompt\" and \"completion\" strings: {e}"
            ))
        })?;
        let prompt = encode_text(tok, &l.prompt).map_err(|e| at(format!("prompt: {e}")))?;
        let mut completion =
            encode_text(tok, &l.completion).map_err(|e| at(format!("completion: {e}")))?;
        if completion.is_empty() {
            return Err(at(
                "the completion is empty: there is nothing to learn".into()
            ));
        }
        completion.extend(eot);
        if prompt.is_empty() {
            return Err(at(
                "the prompt is empty; a model predicts from at least one token".into(),
            ));
        }
        out.push(Example { prompt, completion });
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no examples (expected JSON lines of {{\"prompt\": ..., \"completion\": ...}})",
            path.display()
        )));
    }
    Ok(out)
}

/// One training row: x (T) and y (T), y = -100 on prompts and padding.
#[derive(Clone, Debug)]
struct Row {
    x: Vec<i32>,
    y: Vec<i32>,
}

/// Append `e` to a row under construction: inputs are its tokens but the last, targets
/// its tokens but the first, counted only where they are completion tokens.
fn push_example(row: &mut Row, e: &Example) {
    let all: Vec<u32> = e.prompt.iter().chain(&e.completion).copied().collect();
    for i in 0..all.len() - 1 {
        row.x.push(all[i] as i32);
        row.y.push(if i + 1 >= e.prompt.len() {
            all[i + 1] as i32
        } else {
            IGNORE_INDEX
        });
    }
}

/// Rows of length `t` from `examples`: one example per row, padded (`pack` false), or
/// whole examples concatenated in order into each row while they fit (`pack` true).
/// Padding is token 0 with target -100; an example longer than T + 1 tokens is an error.
fn make_rows(examples: &[Example], t: usize, pack: bool, what: &str) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut cur = Row {
        x: Vec::new(),
        y: Vec::new(),
    };
    for (i, e) in examples.iter().enumerate() {
        if e.len() > t + 1 {
            return Err(Error::Invalid(format!(
                "{what}: example {} has {} tokens (prompt {}, completion {}), more than \
                 --block-size {t} + 1; shorten it or raise --block-size (up to the model's \
                 context)",
                i + 1,
                e.len(),
                e.prompt.len(),
                e.completion.len()
            )));
        }
        if !cur.x.is_empty() && (!pack || cur.x.len() + e.len() - 1 > t) {
            rows.push(std::mem::replace(
                &mut cur,
                Row {
                    x: Vec::new(),
                    y: Vec::new(),
                },
            ));
        }
        push_example(&mut cur, e);
    }
    if !cur.x.is_empty() {
        rows.push(cur);
    }
    for r in &mut rows {
        r.x.resize(t, 0);
        r.y.resize(t, IGNORE_INDEX);
    }
    Ok(rows)
}

/// Fine-tuning batches: rows drawn without replacement, in an order shuffled anew each
/// epoch (a permutation seeded by the run's seed and the epoch).
pub struct SftBatches {
    train: Vec<Row>,
    val: Vec<Row>,
    seed: u64,
    /// (epoch, permutation of the training rows) last used.
    order: Mutex<Option<(u64, Vec<u32>)>>,
}

impl SftBatches {
    /// Rows of length `t` from `train` and `val` examples (`val` may be empty: evaluation
    /// then uses the training rows).
    pub fn new(
        train: &[Example],
        val: &[Example],
        t: usize,
        pack: bool,
        seed: u64,
        source: &str,
    ) -> Result<Self> {
        Ok(SftBatches {
            train: make_rows(train, t, pack, source)?,
            val: make_rows(val, t, pack, source)?,
            seed,
            order: Mutex::new(None),
        })
    }

    /// The training row at position `pos` of the endless sequence of epochs: epoch
    /// `pos / n` visits the rows in a permutation seeded by (seed, epoch).
    fn row_at(&self, pos: u64) -> usize {
        let n = self.train.len() as u64;
        let epoch = pos / n;
        let mut guard = self.order.lock().expect("order lock");
        if guard.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *guard = Some((
                epoch,
                permutation(n as usize, stream_seed(self.seed, STREAM_EPOCH, epoch)),
            ));
        }
        let (_, perm) = guard.as_ref().expect("permutation just made");
        perm[(pos % n) as usize] as usize
    }

    /// Counted (completion) targets in the training rows.
    pub fn train_targets(&self) -> usize {
        self.train
            .iter()
            .map(|r| r.y.iter().filter(|&&v| v != IGNORE_INDEX).count())
            .sum()
    }
}

impl Batches for SftBatches {
    fn train(&self, step: u64, rows: usize, t: usize) -> Batch {
        let mut x = Vec::with_capacity(rows * t);
        let mut y = Vec::with_capacity(rows * t);
        for r in 0..rows as u64 {
            let row = &self.train[self.row_at(step * rows as u64 + r)];
            x.extend_from_slice(&row.x);
            y.extend_from_slice(&row.y);
        }
        Batch { x, y }
    }

    fn eval(&self, n: usize, b: usize, _t: usize) -> Vec<Batch> {
        let rows = if self.val.is_empty() {
            &self.train
        } else {
            &self.val
        };
        let batches = rows.len().div_ceil(b).clamp(1, n.max(1));
        (0..batches)
            .map(|i| {
                let mut x = Vec::new();
                let mut y = Vec::new();
                for r in 0..b {
                    let row = &rows[(i * b + r) % rows.len()];
                    x.extend_from_slice(&row.x);
                    y.extend_from_slice(&row.y);
                }
                Batch { x, y }
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{} training rows ({} completion tokens), {} validation rows{}",
            self.train.len(),
            self.train_targets(),
            self.val.len(),
            if self.val.is_empty() {
                " (evaluating on the training rows)"
            } else {
                ""
            }
        )
    }
}
