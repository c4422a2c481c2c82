//! Labeled text for fine-tuning a BERT encoder as a sequence classifier: reading
//! `{"text": ..., "label": ...}` JSONL, the label set (label → index), tokenizing each
//! text as `[CLS]` + tokens (truncated) + `[SEP]`, and fixed-shape batches of ids,
//! attention mask, token types and one label per row. As `train::pairs`, the examples are
//! split by a seeded shuffle, training batches visit every example once per epoch in an
//! order shuffled anew each epoch (a pure function of (seed, step), so a resumed run draws
//! the same batches), and validation batches are the validation examples in order.
//! Masked-LM pretraining data is `train::mlm`'s; the model and its head are not built here.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::kernels::crossentropy::IGNORE_INDEX;
use crate::train::data::{epoch_rows, json_kind, read_jsonl, split_shuffled};
use crate::train::mlm::BertSpecials;

const STREAM_SPLIT: u64 = 4;

// ---- reading ----

/// One labeled text; an integer label is kept as its decimal text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabeledText {
    pub text: String,
    pub label: String,
}

/// Read a JSONL file of `{"text": str, "label": str or integer}` objects (other fields are
/// ignored; blank lines skipped). Errors name the file and line and what is wrong: not
/// JSON, not an object, a field missing or of the wrong type, an empty text or label. A
/// file without examples is an error.
pub fn read_labeled(path: &Path) -> Result<Vec<LabeledText>> {
    let shape = r#"{"text": "...", "label": "..."}"#;
    read_jsonl(path, shape, "examples", |obj, at| {
        let text = match obj.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(at(format!(
                    "\"text\" is {}, expected a string",
                    json_kind(other)
                )))
            }
            None => return Err(at("missing the \"text\" field (a string)".into())),
        };
        if text.trim().is_empty() {
            return Err(at("the text is empty".into()));
        }
        let label = match obj.get("label") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(other) => {
                let not_int = if other.is_number() {
                    " that is not an integer"
                } else {
                    ""
                };
                return Err(at(format!(
                    "\"label\" is {}{not_int}, expected a string or an integer",
                    json_kind(other)
                )));
            }
            None => {
                return Err(at(
                    "missing the \"label\" field (a string or an integer)".into()
                ))
            }
        };
        if label.trim().is_empty() {
            return Err(at("the label is empty".into()));
        }
        Ok(LabeledText { text, label })
    })
}

/// The distinct labels, sorted numerically if all are integers, else lexicographically;
/// a label's position is its class index.
pub fn label_set(items: &[LabeledText]) -> Vec<String> {
    let mut labels: Vec<String> = items.iter().map(|i| i.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let numbers: Option<Vec<i128>> = labels.iter().map(|l| l.parse().ok()).collect();
    if let Some(numbers) = numbers {
        let mut pairs: Vec<(i128, String)> = numbers.into_iter().zip(labels).collect();
        // Ties ("1" and "01") keep lexicographic order, so the result is still stable.
        pairs.sort();
        labels = pairs.into_iter().map(|(_, l)| l).collect();
    }
    labels
}

// ---- tokenizing ----

/// One labeled text tokenized: `[CLS]` + tokens + `[SEP]`, and the label's class index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabeledExample {
    pub ids: Vec<u32>,
    pub label: usize,
}

/// Tokenize every item as `[CLS]` + its tokens (`tok.encode(text, false)`, no template;
/// truncated to T − 2) + `[SEP]`, its label as its index in `labels`. Errors name `origin`
/// and the 1-based example: T < 3, a label not in `labels`, a text that does not tokenize.
pub fn tokenize_labeled(
    items: &[LabeledText],
    labels: &[String],
    tok: &Tokenizer,
    specials: BertSpecials,
    t: usize,
    origin: &str,
) -> Result<Vec<LabeledExample>> {
    if t < 3 {
        return Err(Error::Invalid(format!(
            "--block-size {t}: a classification row needs at least 3 positions ([CLS], a \
             token, [SEP])"
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |msg: String| Error::Invalid(format!("{origin} (example {}): {msg}", i + 1));
        let label = labels
            .iter()
            .position(|l| *l == item.label)
            .ok_or_else(|| {
                at(format!(
                    "label {:?} is not one of the model's labels {labels:?}",
                    item.label
                ))
            })?;
        let enc = tok
            .encode(item.text.as_str(), false)
            .map_err(|e| at(format!("tokenizing the text: {e}")))?;
        let tokens = enc.get_ids();
        let kept = &tokens[..tokens.len().min(t - 2)];
        let mut ids = Vec::with_capacity(kept.len() + 2);
        ids.push(specials.cls);
        ids.extend_from_slice(kept);
        ids.push(specials.sep);
        out.push(LabeledExample { ids, label });
    }
    Ok(out)
}

// ---- batches ----

/// One batch at fixed shapes: B rows of T positions and one label per row. Rows beyond the
/// examples given (a short last validation batch) are padding with label -100 and an
/// attention mask with only position 0 set, so attention stays finite.
pub struct ClassBatch {
    /// (B, T) `[CLS]` + tokens + `[SEP]`, padded with `[PAD]`.
    pub ids: Vec<i32>,
    /// (B, T) 1 = real token (incl. CLS/SEP), 0 = padding.
    pub attn_mask: Vec<i32>,
    /// (B, T) all 0.
    pub token_types: Vec<i32>,
    /// (B) class index, -100 (IGNORE_INDEX) for rows without an example.
    pub labels: Vec<i32>,
    /// Rows that hold an example (≤ B).
    pub rows: usize,
}

/// A batch of `examples` at shape (B, T) (see [`ClassBatch`]). Panics if there are more
/// than `b` examples or one longer than T ([`tokenize_labeled`] truncates to fit).
pub fn class_batch(
    examples: &[&LabeledExample],
    b: usize,
    t: usize,
    specials: BertSpecials,
) -> ClassBatch {
    assert!(
        examples.len() <= b,
        "class_batch: {} examples for {b} rows",
        examples.len()
    );
    assert!(t >= 1, "class_batch: T = 0");
    let mut batch = ClassBatch {
        ids: vec![specials.pad as i32; b * t],
        attn_mask: vec![0; b * t],
        token_types: vec![0; b * t],
        labels: vec![IGNORE_INDEX; b],
        rows: examples.len(),
    };
    for r in 0..b {
        let row = r * t;
        match examples.get(r) {
            Some(e) => {
                assert!(
                    e.ids.len() <= t,
                    "class_batch: example of {} tokens in T = {t}",
                    e.ids.len()
                );
                for (j, &id) in e.ids.iter().enumerate() {
                    batch.ids[row + j] = id as i32;
                    batch.attn_mask[row + j] = 1;
                }
                batch.labels[r] = e.label as i32;
            }
            None => batch.attn_mask[row] = 1,
        }
    }
    batch
}

/// The training/validation split of tokenized examples and the batches a run draws.
pub struct ClassBatches {
    pub train: Vec<LabeledExample>,
    pub val: Vec<LabeledExample>,
    pub seed: u64,
    /// Positions per row: every batch is (B, T).
    pub t: usize,
    pub specials: BertSpecials,
}

impl ClassBatches {
    /// Split `examples` after a shuffle seeded by `seed`: the first round(n · val_fraction)
    /// validate (at least 1 when val_fraction > 0 and n ≥ 2), the rest train. An error if
    /// there are no examples, val_fraction is outside [0, 1), no training example is left,
    /// T < 3, or an example is longer than T.
    pub fn new(
        examples: Vec<LabeledExample>,
        val_fraction: f64,
        seed: u64,
        t: usize,
        specials: BertSpecials,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::Invalid(format!(
                "--val-fraction {val_fraction}: expected a fraction in [0, 1)"
            )));
        }
        if t < 3 {
            return Err(Error::Invalid(format!(
                "--block-size {t}: a classification row needs at least 3 positions ([CLS], a \
                 token, [SEP])"
            )));
        }
        let n = examples.len();
        if n == 0 {
            return Err(Error::Invalid("no labeled examples to train on".into()));
        }
        if let Some((i, e)) = examples.iter().enumerate().find(|(_, e)| e.ids.len() > t) {
            return Err(Error::Invalid(format!(
                "example {} has {} tokens, more than --block-size {t}",
                i + 1,
                e.ids.len()
            )));
        }
        let (train, val) = split_shuffled(examples, val_fraction, seed, STREAM_SPLIT, "example")?;
        Ok(ClassBatches {
            train,
            val,
            seed,
            t,
            specials,
        })
    }

    /// The batch of optimizer step `step` (counted from 0): `rows` training examples at
    /// positions step·rows .. (step+1)·rows of the endless sequence of epochs, epoch e
    /// visiting every training example once in a permutation seeded by (seed, e). A pure
    /// function of (seed, step): a resumed run draws the same batches.
    pub fn train_batch(&self, step: u64, rows: usize) -> ClassBatch {
        let picked = epoch_rows(&self.train, self.seed, step, rows);
        class_batch(&picked, rows, self.t, self.specials)
    }

    /// Validation batches of `b` rows, the same at every call: the validation examples in
    /// order (the last batch padded with empty rows), or the training examples in order
    /// when there is no validation example.
    pub fn val_batches(&self, b: usize) -> Vec<ClassBatch> {
        assert!(b > 0, "val_batches: batch size 0");
        let examples = if self.val.is_empty() {
            &self.train
        } else {
            &self.val
        };
        examples
            .chunks(b)
            .map(|chunk| {
                let refs: Vec<&LabeledExample> = chunk.iter().collect();
                class_batch(&refs, b, self.t, self.specials)
            })
            .collect()
    }

    /// For the run's opening lines.
    pub fn describe(&self) -> String {
        format!(
            "{} training examples, {} validation examples{}, ≤ {} tokens each",
            self.train.len(),
            self.val.len(),
            if self.val.is_empty() {
                " (evaluating on the training examples)"
            } else {
                ""
            },
            self.t
        )
    }
}
