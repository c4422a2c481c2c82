//! Masked-language-model pretraining data for a BERT encoder: the special ids of a BERT
//! (WordPiece) tokenizer, and batches of rows `[CLS]` + a window of T − 2 consecutive
//! corpus tokens + `[SEP]`, with BERT's masking: each window token is selected with
//! probability `mask_prob` (at least one per row); a selected token becomes `[MASK]`
//! (80 %), a random vocabulary id (10 %) or stays (10 %), and only selected positions have
//! a target (the original id; -100 elsewhere). Rows have no padding, so the attention mask
//! is all 1, and token types are all 0 (single sentences, no next-sentence task).
//!
//! As `train::data`'s `TextBatches`, a training batch is a pure function of (seed, step),
//! so a resumed run draws exactly the batches it would have drawn, and evaluation batches
//! are drawn once from their own stream and are the same at every evaluation. The token
//! stream is the corpus tokenized without special tokens (`train::data::TokenCache`);
//! labeled fine-tuning data is `train::classify`'s, the model is not built here.

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE_INDEX;
use crate::rng::Rng;
use crate::train::data::stream_seed;

/// The classification token that opens every row.
pub const CLS: &str = "[CLS]";
/// The separator that closes every sentence.
pub const SEP: &str = "[SEP]";
/// Padding (attention mask 0).
pub const PAD: &str = "[PAD]";
/// The token a selected position is replaced with 80 % of the time.
pub const MASK: &str = "[MASK]";
/// WordPiece's unknown token.
pub const UNK: &str = "[UNK]";

// Streams of `stream_seed` (1–4 are `data`'s and `pairs`'); distinct so MLM batches never
// share draws with a GPT-2 run of the same seed.
const STREAM_MLM_TRAIN: u64 = 5;
const STREAM_MLM_EVAL: u64 = 6;

/// Special ids of a BERT tokenizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BertSpecials {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    pub mask: u32,
    pub unk: u32,
}

impl BertSpecials {
    /// The five ids, in field order.
    pub fn all(&self) -> [u32; 5] {
        [self.cls, self.sep, self.pad, self.mask, self.unk]
    }
}

/// Look up `[CLS]`, `[SEP]`, `[PAD]`, `[MASK]` and `[UNK]` in `tok`; an error naming `origin` (a
/// tokenizer.json, a run) if one is missing.
pub fn bert_specials(tok: &Tokenizer, origin: &str) -> Result<BertSpecials> {
    let id = |s: &str| {
        tok.token_to_id(s).ok_or_else(|| {
            Error::Invalid(format!(
                "{origin}: the tokenizer has no {s} token; a BERT model needs {CLS}, {SEP}, \
                 {PAD}, {MASK} and {UNK} (a WordPiece tokenizer such as bert-base-uncased's)"
            ))
        })
    };
    Ok(BertSpecials {
        cls: id(CLS)?,
        sep: id(SEP)?,
        pad: id(PAD)?,
        mask: id(MASK)?,
        unk: id(UNK)?,
    })
}

/// A batch of B rows of T positions.
pub struct BertBatch {
    /// (B, T) input ids (masked for MLM).
    pub ids: Vec<i32>,
    /// (B, T) 1 = real token (incl. CLS/SEP), 0 = padding.
    pub attn_mask: Vec<i32>,
    /// (B, T) all 0.
    pub token_types: Vec<i32>,
    /// (B, T) MLM: the original id at selected positions, -100 (IGNORE_INDEX) elsewhere.
    pub targets: Vec<i32>,
}

impl BertBatch {
    /// Counted targets (not -100).
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&v| v != IGNORE_INDEX).count()
    }
}

/// Uniform in [0, 1) with 53 random bits, to compare with f64 probabilities exactly.
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Masked-LM batches from a token stream (the corpus tokenized WITHOUT special tokens, as
/// `train::data::TokenCache` holds it): each row is `[CLS]` + a window of T − 2 consecutive
/// tokens at a uniformly random offset + `[SEP]` (like nanoGPT's windows). Of the window's
/// tokens, each is selected with probability `mask_prob` (0.15), and at least one per row
/// (a uniformly random one when none was); a selected token becomes `[MASK]` with p 0.8, a
/// uniformly random id of [0, vocab) that is none of the five specials with p 0.1, or
/// stays with p 0.1; its target is the original id. CLS/SEP are never selected. A pure
/// function of (seed, step) like `TextBatches`.
pub struct MlmBatches {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub seed: u64,
    pub specials: BertSpecials,
    /// The model's vocabulary size V: random replacements are drawn below it.
    pub vocab: usize,
    /// Probability that a window token is selected (BERT: 0.15).
    pub mask_prob: f64,
}

impl MlmBatches {
    /// Errors a user can cause: `mask_prob` outside (0, 1), an empty training split, a
    /// special id or a token id not below `vocab`, or a vocabulary with nothing but
    /// specials (no id to draw a random replacement from). Block-size checks need T:
    /// [`MlmBatches::check`].
    pub fn new(
        train: Vec<u32>,
        val: Vec<u32>,
        seed: u64,
        specials: BertSpecials,
        vocab: usize,
        mask_prob: f64,
    ) -> Result<Self> {
        if !(mask_prob > 0.0 && mask_prob < 1.0) {
            return Err(Error::Invalid(format!(
                "mask probability {mask_prob}: expected a probability strictly between 0 and 1 \
                 (BERT uses 0.15)"
            )));
        }
        if train.is_empty() {
            return Err(Error::Invalid(
                "masked-LM data: the training split has no tokens".into(),
            ));
        }
        if let Some(s) = specials.all().iter().find(|&&s| s as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "masked-LM data: special id {s} is outside the model's vocabulary of {vocab}"
            )));
        }
        if let Some(&bad) = train.iter().chain(&val).find(|&&t| t as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "masked-LM data: token id {bad} is outside the model's vocabulary of {vocab}"
            )));
        }
        let me = MlmBatches {
            train,
            val,
            seed,
            specials,
            vocab,
            mask_prob,
        };
        if me.non_special().1 == 0 {
            return Err(Error::Invalid(format!(
                "masked-LM data: a vocabulary of {vocab} holds only special tokens; there is no \
                 id to draw a random replacement from"
            )));
        }
        Ok(me)
    }

    /// Error unless rows of `t` positions are possible: T ≥ 3 (`[CLS]`, one token, `[SEP]`)
    /// and the training split longer than T − 2. (A validation split that is too short is
    /// not an error: evaluation then uses the training split.)
    pub fn check(&self, t: usize) -> Result<()> {
        if t < 3 {
            return Err(Error::Invalid(format!(
                "--block-size {t}: a masked-LM row needs at least 3 positions ([CLS], a token, \
                 [SEP])"
            )));
        }
        if self.train.len() <= t - 2 {
            return Err(Error::Invalid(format!(
                "the corpus is too short: the training split has {} tokens, not more than a \
                 window of --block-size {t} − 2; use more text or a smaller --block-size",
                self.train.len()
            )));
        }
        Ok(())
    }

    /// The distinct specials in increasing order, and how many ids of [0, vocab) are not
    /// special.
    fn non_special(&self) -> (Vec<u32>, usize) {
        let mut s = self.specials.all().to_vec();
        s.sort_unstable();
        s.dedup();
        let n = self.vocab - s.len();
        (s, n)
    }

    /// `rows` rows of `t` positions drawn from `data` with `rng`.
    fn rows(&self, data: &[u32], rng: &mut Rng, rows: usize, t: usize) -> BertBatch {
        assert!(
            t >= 3 && data.len() > t - 2,
            "MlmBatches: T = {t} with {} tokens (call MlmBatches::check first)",
            data.len()
        );
        let w = t - 2;
        let (specials, n_real) = self.non_special();
        let sp = self.specials;
        let mut b = BertBatch {
            ids: Vec::with_capacity(rows * t),
            attn_mask: vec![1; rows * t],
            token_types: vec![0; rows * t],
            targets: vec![IGNORE_INDEX; rows * t],
        };
        for r in 0..rows {
            let at = rng.below((data.len() - w + 1) as u64) as usize;
            let window = &data[at..at + w];
            b.ids.push(sp.cls as i32);
            b.ids.extend(window.iter().map(|&v| v as i32));
            b.ids.push(sp.sep as i32);
            let mut selected: Vec<usize> = (0..w).filter(|_| unit(rng) < self.mask_prob).collect();
            if selected.is_empty() {
                selected.push(rng.below(w as u64) as usize);
            }
            for j in selected {
                let pos = r * t + 1 + j;
                b.targets[pos] = window[j] as i32;
                let u = unit(rng);
                if u < 0.8 {
                    b.ids[pos] = sp.mask as i32;
                } else if u < 0.9 {
                    // The k-th non-special id: step over each special at or below it.
                    let mut k = rng.below(n_real as u64) as u32;
                    for &s in &specials {
                        if k >= s {
                            k += 1;
                        }
                    }
                    b.ids[pos] = k as i32;
                }
            }
        }
        b
    }

    /// The batch of optimizer step `step` (counted from 0): `rows` rows of `t` positions
    /// from the training split, drawn from an RNG seeded by (seed, step). Panics unless
    /// [`MlmBatches::check`] accepts `t`.
    pub fn train_batch(&self, step: u64, rows: usize, t: usize) -> BertBatch {
        let mut rng = Rng::new(stream_seed(self.seed, STREAM_MLM_TRAIN, step));
        self.rows(&self.train, &mut rng, rows, t)
    }

    /// `n` batches from the validation split (or train if val is too short for a window of
    /// T − 2 tokens), fixed across calls: windows and masking are drawn from their own
    /// stream.
    pub fn eval_batches(&self, n: usize, b: usize, t: usize) -> Vec<BertBatch> {
        let data = if t >= 2 && self.val.len() > t - 2 {
            &self.val
        } else {
            &self.train
        };
        let mut rng = Rng::new(stream_seed(self.seed, STREAM_MLM_EVAL, 0));
        (0..n).map(|_| self.rows(data, &mut rng, b, t)).collect()
    }

    /// For the run's opening lines.
    pub fn describe(&self) -> String {
        format!(
            "{} training tokens, {} validation tokens, {:.0}% of tokens masked",
            self.train.len(),
            self.val.len(),
            self.mask_prob * 100.0
        )
    }
}
