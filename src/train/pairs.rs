//! Sequence-to-sequence training data: source → target pairs read from JSONL, tokenizers
//! that reserve `<pad>`, `<s>` and `</s>`, and the fixed-shape batches an encoder–decoder
//! step consumes (source ids and their padding mask; decoder inputs `<s>` + target and
//! outputs target + `</s>`, padding not counted). As `train::data`, every training batch
//! is a pure function of (seed, step) (pairs drawn without replacement in an order
//! shuffled anew each epoch), so a resumed run draws exactly the batches it would have
//! drawn; evaluation batches are the same at every evaluation. Building the model and
//! running the steps is not done here; generated toy pairs are `train::tasks`'.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE_INDEX;
use crate::train::data::{epoch_rows, json_kind, read_jsonl, split_shuffled};
use crate::train::tokenize::{build, encode_text, Normalize, TokenizerSpec};

/// The padding token (source and decoder-input padding).
pub const PAD: &str = "<pad>";
/// The beginning-of-sequence token the decoder starts from.
pub const BOS: &str = "<s>";
/// The end-of-sequence token the decoder learns to emit after the target.
pub const EOS: &str = "</s>";

/// At most this many evaluation batches: a huge validation set stays cheap to evaluate.
pub const MAX_EVAL_BATCHES: usize = 64;

const STREAM_SPLIT: u64 = 4;

// ---- reading pairs ----

/// One source → target pair as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairText {
    pub source: String,
    pub target: String,
}

/// What a JSON value is, for messages.
/// Read a JSONL file of `{"source": "...", "target": "..."}` objects (other fields are
/// ignored; blank lines skipped). Errors name the file and line and what is wrong: not
/// JSON, not an object, a field missing or not a string. A file without pairs is an error.
pub fn read_pairs(path: &Path) -> Result<Vec<PairText>> {
    let shape = r#"{"source": "...", "target": "..."}"#;
    read_jsonl(path, shape, "pairs", |obj, at| {
        let field = |name: &str| -> Result<String> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(at(format!(
                    "\"{name}\" is {}, expected a string",
                    json_kind(other)
                ))),
                None => Err(at(format!("missing the \"{name}\" field (a string)"))),
            }
        };
        Ok(PairText {
            source: field("source")?,
            target: field("target")?,
        })
    })
}

// ---- tokenizers ----

/// The ids a seq2seq model reserves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    pub pad: u32,
    pub bos: u32,
    pub eos: u32,
}

fn specials() -> Vec<AddedToken> {
    [PAD, BOS, EOS]
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect()
}

/// A tokenizer for one side (or both) built from `docs` by `spec` (as
/// `tokenize::build`), plus `<pad>`, `<s>` and `</s>` as special added tokens. For
/// `TokenizerSpec::Char` the specials are ids 0, 1, 2 and the characters follow from 3 in
/// code-point order (so PAD 0, BOS 1, EOS 2); for other specs they get the ids adding
/// them gives (the existing ids where the vocabulary already has them, otherwise the next
/// free ones). Decode with [`decode`] to leave the specials out of the text.
pub fn build_tokenizer(
    spec: &TokenizerSpec,
    normalize: Normalize,
    docs: &[String],
) -> Result<Tokenizer> {
    let mut tok = build(spec, normalize, docs)?;
    if *spec == TokenizerSpec::Char {
        // The same characters, shifted by 3 so that the specials lead the vocabulary; the
        // specials are also in the model's vocabulary, so adding them keeps ids 0, 1, 2.
        // No merges: the model never produces them from text.
        let mut chars: Vec<(String, u32)> = tok.get_vocab(false).into_iter().collect();
        chars.sort_by_key(|&(_, id)| id);
        let vocab: tokenizers::models::bpe::Vocab = [PAD, BOS, EOS]
            .iter()
            .map(|s| s.to_string())
            .chain(chars.into_iter().map(|(c, _)| c))
            .enumerate()
            .map(|(i, c)| (c, i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, vec![])
            .build()
            .map_err(|e| Error::Invalid(format!("character tokenizer: {e}")))?;
        let mut shifted = Tokenizer::new(bpe);
        shifted.with_normalizer(tok.get_normalizer().cloned());
        shifted.with_decoder(tok.get_decoder().cloned());
        tok = shifted;
    }
    tok.add_special_tokens(&specials());
    Ok(tok)
}

/// The ids of `<pad>`, `<s>` and `</s>` in `tok`; an error naming `origin` (a
/// tokenizer.json, a run) if any is missing.
pub fn special_ids(tok: &Tokenizer, origin: &str) -> Result<SpecialIds> {
    let id = |s: &str| {
        tok.token_to_id(s).ok_or_else(|| {
            Error::Invalid(format!(
                "{origin}: the tokenizer has no {s} token; a seq2seq model needs {PAD}, {BOS} \
                 and {EOS}"
            ))
        })
    };
    Ok(SpecialIds {
        pad: id(PAD)?,
        bos: id(BOS)?,
        eos: id(EOS)?,
    })
}

/// Text of `ids`, leaving out special tokens (`<pad>`, `<s>`, `</s>` and any other).
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, true)
        .map_err(|e| Error::Invalid(format!("decoding: {e}")))
}

// ---- tokenized pairs ----

/// One pair tokenized, without specials.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub source: Vec<u32>,
    pub target: Vec<u32>,
}

/// Tokenize all pairs: sources with `src_tok`, targets with `tgt_tok` (pass the same
/// tokenizer twice when they share one). Errors name `origin` and the 1-based pair: a
/// side that does not tokenize, an empty source (the encoder needs a token), a side
/// whose text holds a special token (`<s>` written out). An empty target is allowed: the
/// model learns to answer `</s>` at once.
pub fn tokenize_pairs(
    pairs: &[PairText],
    src_tok: &Tokenizer,
    tgt_tok: &Tokenizer,
    origin: &str,
) -> Result<Vec<Pair>> {
    let reserved = |tok: &Tokenizer| -> Vec<(u32, &'static str)> {
        [PAD, BOS, EOS]
            .iter()
            .filter_map(|s| tok.token_to_id(s).map(|id| (id, *s)))
            .collect()
    };
    let (src_reserved, tgt_reserved) = (reserved(src_tok), reserved(tgt_tok));
    let mut out = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let at = |msg: String| Error::Invalid(format!("{origin} (pair {}): {msg}", i + 1));
        let side = |name: &str, tok: &Tokenizer, text: &str, res: &[(u32, &str)]| {
            // The text first: the char tokenizer's own check would blame its characters;
            // then the ids, for a special reached by normalization.
            let found = |ids: &[u32]| {
                res.iter()
                    .find(|(id, s)| text.contains(s) || ids.contains(id))
                    .map(|(_, s)| {
                        at(format!(
                            "the {name} contains the special token {s}, which the model reserves"
                        ))
                    })
            };
            if let Some(e) = found(&[]) {
                return Err(e);
            }
            let ids = encode_text(tok, text).map_err(|e| at(format!("{name}: {e}")))?;
            if let Some(e) = found(&ids) {
                return Err(e);
            }
            Ok(ids)
        };
        let source = side("source", src_tok, &p.source, &src_reserved)?;
        if source.is_empty() {
            return Err(at(
                "the source is empty; the encoder needs at least one token".into(),
            ));
        }
        let target = side("target", tgt_tok, &p.target, &tgt_reserved)?;
        out.push(Pair { source, target });
    }
    Ok(out)
}

// ---- batches ----

/// One batch at fixed shapes: B rows of S source tokens and of T target positions.
/// Rows beyond the pairs given (a short last evaluation batch) are all padding: `src_pad`
/// all 1, `tgt_out` all -100, so they add nothing to the loss.
pub struct Seq2seqBatch {
    /// (B, S) source ids, padded with pad.
    pub src: Vec<i32>,
    /// (B, S) 1 where `src` is padding, else 0 (the encoder's key padding mask).
    pub src_pad: Vec<i32>,
    /// (B, T) decoder inputs: bos, then the target, padded with pad.
    pub tgt_in: Vec<i32>,
    /// (B, T) decoder targets: the target, then eos, padded with -100 (IGNORE_INDEX).
    pub tgt_out: Vec<i32>,
    /// Rows that hold a pair (≤ B).
    pub rows: usize,
}

impl Seq2seqBatch {
    /// Counted targets (not -100): the target tokens and eos of every real row.
    pub fn targets(&self) -> usize {
        self.tgt_out.iter().filter(|&&v| v != IGNORE_INDEX).count()
    }
}

/// A batch of `pairs` at shapes (B, S) and (B, T) (see [`Seq2seqBatch`]). Panics if there
/// are more than `b` pairs, a source longer than S or a target longer than T − 1
/// ([`PairBatches`] sizes S and T to fit every pair).
pub fn make_batch(pairs: &[&Pair], b: usize, s: usize, t: usize, ids: SpecialIds) -> Seq2seqBatch {
    assert!(
        pairs.len() <= b,
        "make_batch: {} pairs for {b} rows",
        pairs.len()
    );
    let (pad, bos, eos) = (ids.pad as i32, ids.bos as i32, ids.eos as i32);
    let mut batch = Seq2seqBatch {
        src: vec![pad; b * s],
        src_pad: vec![1; b * s],
        tgt_in: vec![pad; b * t],
        tgt_out: vec![IGNORE_INDEX; b * t],
        rows: pairs.len(),
    };
    for (r, p) in pairs.iter().enumerate() {
        assert!(
            p.source.len() <= s && p.target.len() < t,
            "make_batch: pair of {} source / {} target tokens in S = {s}, T = {t}",
            p.source.len(),
            p.target.len()
        );
        for (j, &id) in p.source.iter().enumerate() {
            batch.src[r * s + j] = id as i32;
            batch.src_pad[r * s + j] = 0;
        }
        let row = r * t;
        batch.tgt_in[row] = bos;
        for (j, &id) in p.target.iter().enumerate() {
            batch.tgt_in[row + j + 1] = id as i32;
            batch.tgt_out[row + j] = id as i32;
        }
        batch.tgt_out[row + p.target.len()] = eos;
    }
    batch
}

/// The training/validation split of tokenized pairs and the batches a run draws.
pub struct PairBatches {
    pub train: Vec<Pair>,
    pub val: Vec<Pair>,
    pub seed: u64,
    /// Source length of every batch: the longest source.
    pub s: usize,
    /// Target length of every batch: the longest target + 1 (for bos / eos).
    pub t: usize,
    pub ids: SpecialIds,
}

impl PairBatches {
    /// Split `pairs` after a shuffle seeded by `seed`: the first round(n · val_fraction)
    /// validate (at least 1 when val_fraction > 0 and n ≥ 2), the rest train. S is the
    /// longest source and T the longest target + 1, over all pairs, each at least 1. An
    /// error if there are no pairs, val_fraction is outside [0, 1), or no training pair
    /// is left.
    pub fn new(pairs: Vec<Pair>, val_fraction: f64, seed: u64, ids: SpecialIds) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::Invalid(format!(
                "--val-fraction {val_fraction}: expected a fraction in [0, 1)"
            )));
        }
        let n = pairs.len();
        if n == 0 {
            return Err(Error::Invalid("no pairs to train on".into()));
        }
        let s = pairs
            .iter()
            .map(|p| p.source.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let t = pairs.iter().map(|p| p.target.len()).max().unwrap_or(0) + 1;
        let (train, val) = split_shuffled(pairs, val_fraction, seed, STREAM_SPLIT, "pair")?;
        Ok(PairBatches {
            train,
            val,
            seed,
            s,
            t,
            ids,
        })
    }

    /// The batch of optimizer step `step` (counted from 0): `rows` training pairs at
    /// positions step·rows .. (step+1)·rows of the endless sequence of epochs, epoch e
    /// visiting every training pair once in a permutation seeded by (seed, e). A pure
    /// function of (seed, step): a resumed run draws the same batches.
    pub fn train_batch(&self, step: u64, rows: usize) -> Seq2seqBatch {
        let picked = epoch_rows(&self.train, self.seed, step, rows);
        make_batch(&picked, rows, self.s, self.t, self.ids)
    }

    /// Evaluation batches of `b` rows, the same at every call: the validation pairs in
    /// order (the last batch padded with empty rows), or the training pairs in order when
    /// there is no validation pair; at most the first [`MAX_EVAL_BATCHES`] batches.
    pub fn eval_batches(&self, b: usize) -> Vec<Seq2seqBatch> {
        assert!(b > 0, "eval_batches: batch size 0");
        let pairs = if self.val.is_empty() {
            &self.train
        } else {
            &self.val
        };
        pairs
            .chunks(b)
            .take(MAX_EVAL_BATCHES)
            .map(|chunk| {
                let refs: Vec<&Pair> = chunk.iter().collect();
                make_batch(&refs, b, self.s, self.t, self.ids)
            })
            .collect()
    }

    /// For the run's opening lines.
    pub fn describe(&self) -> String {
        format!(
            "{} training pairs, {} validation pairs{}, source ≤ {} tokens, target ≤ {} tokens",
            self.train.len(),
            self.val.len(),
            if self.val.is_empty() {
                " (evaluating on the training pairs)"
            } else {
                ""
            },
            self.s,
            self.t - 1
        )
    }
}
