//! Generated toy seq2seq tasks for the learning demonstration: reverse, sort or copy a
//! string of random lowercase letters. Small alphabets and short strings make a task an
//! encoder–decoder learns in minutes, and its answers are checkable by eye. Pairs are a
//! pure function of the seed and are written as the JSONL `train::pairs::read_pairs`
//! reads; tokenizing and batching them is `train::pairs`'.

use std::path::Path;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::checkpoint::write_atomic;
use crate::rng::Rng;
use crate::train::pairs::PairText;

/// What the target is made of the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// The source backwards.
    Reverse,
    /// The source's letters in alphabetical order.
    Sort,
    /// The source itself.
    Copy,
}

impl FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "reverse" => Ok(Task::Reverse),
            "sort" => Ok(Task::Sort),
            "copy" => Ok(Task::Copy),
            _ => Err(Error::Invalid(format!(
                "task {s:?}: expected one of reverse, sort, copy"
            ))),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Task::Reverse => "reverse",
            Task::Sort => "sort",
            Task::Copy => "copy",
        })
    }
}

impl Task {
    /// The target of `source`.
    pub fn target(&self, source: &str) -> String {
        match self {
            Task::Reverse => source.chars().rev().collect(),
            Task::Sort => {
                let mut c: Vec<char> = source.chars().collect();
                c.sort_unstable();
                c.into_iter().collect()
            }
            Task::Copy => source.to_string(),
        }
    }
}

/// `n` pairs of `task`: each source is a string of a length uniform in
/// `min_len..=max_len` of letters uniform over the first `alphabet` lowercase letters
/// (10 = 'a'..='j'), the target what the task makes of it. The same seed gives the same
/// pairs. Errors unless n ≥ 1, 1 ≤ min_len ≤ max_len and 1 ≤ alphabet ≤ 26.
pub fn generate(
    task: Task,
    n: usize,
    min_len: usize,
    max_len: usize,
    alphabet: usize,
    seed: u64,
) -> Result<Vec<PairText>> {
    if n == 0 {
        return Err(Error::Invalid(
            "the number of pairs must be at least 1".into(),
        ));
    }
    if min_len == 0 {
        return Err(Error::Invalid(
            "the minimum length must be at least 1 (the encoder needs a token)".into(),
        ));
    }
    if min_len > max_len {
        return Err(Error::Invalid(format!(
            "the minimum length {min_len} exceeds the maximum length {max_len}"
        )));
    }
    if !(1..=26).contains(&alphabet) {
        return Err(Error::Invalid(format!(
            "an alphabet of {alphabet} letters: expected 1 to 26 (a to z)"
        )));
    }
    let mut rng = Rng::new(seed);
    Ok((0..n)
        .map(|_| {
            let len = min_len + rng.below((max_len - min_len + 1) as u64) as usize;
            let source: String = (0..len)
                .map(|_| (b'a' + rng.below(alphabet as u64) as u8) as char)
                .collect();
            PairText {
                target: task.target(&source),
                source,
            }
        })
        .collect())
}

/// Write `pairs` to `path` as JSONL, one `{"source": ..., "target": ...}` per line,
/// atomically (a reader never sees half a file).
pub fn write_pairs(path: &Path, pairs: &[PairText]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        text.push_str(&serde_json::to_string(p).expect("a pair serializes"));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}
