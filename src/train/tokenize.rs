//! Tokenizers a training run builds from its corpus or takes as given, all as
//! `tokenizers::Tokenizer` so that each is saved into the run directory as a
//! `tokenizer.json` any Hugging Face loader opens: character level (one token per
//! character of the corpus, nanoGPT's `shakespeare_char`), byte level (256 tokens),
//! GPT-2's BPE (from `crate::tokenizer`), a byte-level BPE trained on the corpus
//! (`bpe:4096`), or a user's `tokenizer.json`. Unicode normalization (NFC, NFKC,
//! lowercase) is put into the tokenizer itself, so generation and fine-tuning normalize
//! exactly as training did. Reading the corpus and caching its tokens is `train::data`'s.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence, NFC, NFKC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, NormalizedString, Normalizer, Tokenizer};

use crate::error::{Error, Result};
use crate::model::checkpoint::write_atomic;

/// The end-of-text token of GPT-2's BPE and of BPEs trained here; documents in a
/// corpus are separated by it where the vocabulary has it.
pub const EOT: &str = "<|endoftext|>";

/// Which tokenizer a run uses (`--tokenizer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// One token per distinct character of the (normalized) corpus.
    Char,
    /// One token per byte: 256 tokens, any text.
    Byte,
    /// GPT-2's byte-level BPE, 50257 tokens (shipped in assets/gpt2).
    Gpt2,
    /// A byte-level BPE of this many tokens trained on the corpus.
    Bpe(usize),
    /// A `tokenizer.json`.
    File(PathBuf),
}

impl FromStr for TokenizerSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "char" => TokenizerSpec::Char,
            "byte" => TokenizerSpec::Byte,
            "gpt2" => TokenizerSpec::Gpt2,
            _ => {
                if let Some(n) = s.strip_prefix("bpe:") {
                    let n: usize = n.parse().map_err(|_| {
                        Error::Invalid(format!(
                            "--tokenizer {s}: expected bpe:<vocabulary size>, e.g. bpe:4096"
                        ))
                    })?;
                    if !(260..=1 << 20).contains(&n) {
                        return Err(Error::Invalid(format!(
                            "--tokenizer {s}: a trained BPE needs between 260 and 1048576 \
                             tokens (256 bytes, the end-of-text token and some merges)"
                        )));
                    }
                    TokenizerSpec::Bpe(n)
                } else if s.ends_with(".json") || Path::new(s).is_file() {
                    TokenizerSpec::File(PathBuf::from(s))
                } else {
                    return Err(Error::Invalid(format!(
                        "--tokenizer {s:?}: expected char, byte, gpt2, bpe:<size> or the path \
                         of a tokenizer.json"
                    )));
                }
            }
        })
    }
}

impl std::fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerSpec::Char => f.write_str("char"),
            TokenizerSpec::Byte => f.write_str("byte"),
            TokenizerSpec::Gpt2 => f.write_str("gpt2"),
            TokenizerSpec::Bpe(n) => write!(f, "bpe:{n}"),
            TokenizerSpec::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Unicode normalization applied before tokenizing (`--normalize`), in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normalize {
    pub nfc: bool,
    pub nfkc: bool,
    pub lowercase: bool,
}

impl FromStr for Normalize {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut n = Normalize::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "nfc" => n.nfc = true,
                "nfkc" => n.nfkc = true,
                "lowercase" | "lower" => n.lowercase = true,
                _ => {
                    return Err(Error::Invalid(format!(
                        "--normalize {s:?}: unknown {part:?}; expected a comma-separated list \
                         of nfc, nfkc, lowercase (or none)"
                    )))
                }
            }
        }
        if n.nfc && n.nfkc {
            return Err(Error::Invalid(format!(
                "--normalize {s:?}: choose one of nfc and nfkc"
            )));
        }
        Ok(n)
    }
}

impl Normalize {
    pub fn is_none(&self) -> bool {
        *self == Normalize::default()
    }

    fn wrapper(&self) -> Option<NormalizerWrapper> {
        let mut parts: Vec<NormalizerWrapper> = Vec::new();
        if self.nfc {
            parts.push(NFC.into());
        }
        if self.nfkc {
            parts.push(NFKC.into());
        }
        if self.lowercase {
            parts.push(Lowercase.into());
        }
        match parts.len() {
            0 => None,
            1 => parts.pop(),
            _ => Some(Sequence::new(parts).into()),
        }
    }
}

fn tk_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// Build the tokenizer `spec` asks for; `docs` is the corpus (char-level and trained BPE
/// learn their vocabulary from it).
pub fn build(spec: &TokenizerSpec, normalize: Normalize, docs: &[String]) -> Result<Tokenizer> {
    if let TokenizerSpec::File(path) = spec {
        if !normalize.is_none() {
            return Err(Error::Invalid(format!(
                "--normalize applies to tokenizers wgformer builds; {} carries its own \
                 normalizer",
                path.display()
            )));
        }
        return crate::tokenizer::load(path);
    }
    let norm = normalize.wrapper();
    let mut tok = match spec {
        TokenizerSpec::Char => char_level(norm.as_ref(), docs)?,
        TokenizerSpec::Byte => byte_level()?,
        TokenizerSpec::Gpt2 => crate::tokenizer::gpt2_bpe()?,
        TokenizerSpec::Bpe(n) => return trained_bpe(*n, norm, docs),
        TokenizerSpec::File(_) => unreachable!("handled above"),
    };
    if let Some(n) = norm {
        tok.with_normalizer(Some(n));
    }
    Ok(tok)
}

/// `text` as the normalizer (if any) rewrites it.
fn normalized(norm: Option<&NormalizerWrapper>, text: &str) -> Result<String> {
    match norm {
        None => Ok(text.to_string()),
        Some(n) => {
            let mut s = NormalizedString::from(text);
            n.normalize(&mut s).map_err(|e| tk_err("normalizing", e))?;
            Ok(s.get().to_string())
        }
    }
}

/// One token per distinct character, ids in code-point order (as nanoGPT's
/// `sorted(set(data))`): a BPE without merges and without pre-tokenization, whose
/// decoder concatenates the characters.
fn char_level(norm: Option<&NormalizerWrapper>, docs: &[String]) -> Result<Tokenizer> {
    let mut chars = BTreeSet::new();
    for d in docs {
        chars.extend(normalized(norm, d)?.chars());
    }
    if chars.is_empty() {
        return Err(Error::Invalid(
            "the corpus has no characters to build a character-level tokenizer from".into(),
        ));
    }
    crate::tokenizer::char_level(chars)
}

/// GPT-2's map from bytes to printable characters (`bytes_to_unicode` of its encoder.py),
/// which byte-level tokenizers use as their alphabet.
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
    let mut extra = 0;
    (0..=255u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("Latin-1 code point")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("code point below 512")
            }
        })
        .collect()
}

/// 256 tokens, token i = byte i: byte-level pre-tokenization without GPT-2's splitting
/// regex and a BPE without merges.
fn byte_level() -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = byte_chars()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| tk_err("byte tokenizer", e))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(
        ByteLevel::default()
            .add_prefix_space(false)
            .use_regex(false),
    ));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// A GPT-2-style byte-level BPE of `size` tokens (256 bytes, `<|endoftext|>`, merges)
/// trained on `docs`.
fn trained_bpe(size: usize, norm: Option<NormalizerWrapper>, docs: &[String]) -> Result<Tokenizer> {
    let mut tok = Tokenizer::new(BPE::default());
    if let Some(n) = norm {
        tok.with_normalizer(Some(n));
    }
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let trainer = BpeTrainer::builder()
        .vocab_size(size)
        .min_frequency(2)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from(EOT, true)])
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    let pieces = docs.iter().flat_map(|d| split_chunks(d, 1 << 16));
    tok.train(&mut trainer, pieces)
        .map_err(|e| tk_err("training the BPE", e))?;
    Ok(tok)
}

/// Vocabulary size a model needs for this tokenizer: the largest id + 1.
pub fn vocab_size(tok: &Tokenizer) -> usize {
    tok.get_vocab(true)
        .values()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1)
}

/// The id of `<|endoftext|>`, if the vocabulary has it.
pub fn eot_id(tok: &Tokenizer) -> Option<u32> {
    tok.token_to_id(EOT)
}

/// Whether `tok` is a character-level tokenizer as built here (no pre-tokenizer, a
/// concatenating decoder), whose model silently drops unknown characters.
fn is_char_level(tok: &Tokenizer) -> bool {
    tok.get_pre_tokenizer().is_none()
        && matches!(tok.get_decoder(), Some(tokenizers::DecoderWrapper::Fuse(_)))
}

/// Split `text` into pieces of at least `target` bytes, each ending with a newline
/// followed by a non-space character, where no tokenizer here merges across: byte-level
/// pre-tokenization isolates such a newline, so encoding piece by piece gives the ids of
/// encoding the whole (with bounded memory for big documents).
pub fn split_chunks(text: &str, target: usize) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= bytes.len() {
            return None;
        }
        let mut i = (start + target).min(bytes.len());
        let boundary = |i: usize| bytes[i - 1] == b'\n' && !bytes[i].is_ascii_whitespace();
        while i < bytes.len() && !boundary(i) {
            i += 1;
        }
        // i is at a char boundary: after '\n' (ASCII) or the end.
        let piece = &text[start..i];
        start = i;
        Some(piece)
    })
}

/// Token ids of `text`. For character-level tokenizers, characters outside the
/// vocabulary are an error naming them (the model would silently drop them).
pub fn encode_text(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for piece in split_chunks(text, 1 << 18) {
        let enc = tok
            .encode(piece, false)
            .map_err(|e| tk_err("tokenizing", e))?;
        ids.extend_from_slice(enc.get_ids());
    }
    if is_char_level(tok) {
        let norm = normalized(tok.get_normalizer(), text)?;
        if norm.chars().count() != ids.len() {
            let unknown: BTreeSet<char> = norm
                .chars()
                .filter(|c| tok.token_to_id(&c.to_string()).is_none())
                .collect();
            let list: Vec<String> = unknown.iter().take(20).map(|c| format!("{c:?}")).collect();
            return Err(Error::Invalid(format!(
                "{} character(s) are not in the character-level vocabulary: {}",
                unknown.len(),
                list.join(" ")
            )));
        }
    }
    Ok(ids)
}

/// Text of `ids`.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    crate::tokenizer::decode(tok, ids)
}

/// Write `tok` as `path` (a `tokenizer.json`), atomically.
pub fn save(tok: &Tokenizer, path: &Path) -> Result<()> {
    let json = tok
        .to_string(true)
        .map_err(|e| tk_err(&path.display().to_string(), e))?;
    write_atomic(path, json.as_bytes())
}

/// A short description: kind and vocabulary size.
pub fn describe(spec: &TokenizerSpec, tok: &Tokenizer) -> String {
    format!("{spec} ({} tokens)", vocab_size(tok))
}
