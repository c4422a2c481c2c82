//! Tokenizers, through the `tokenizers` crate: GPT-2's byte-level BPE built from the
//! vocabulary and merges shipped in `assets/gpt2/` (MIT, see its LICENSE), any
//! `tokenizer.json`, and the choice of tokenizer for a model directory. Building new
//! tokenizers from a corpus (character, byte, trained BPE) belongs to training.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};

/// GPT-2's vocabulary (50257 entries) and merges, embedded from `assets/gpt2/`.
pub const GPT2_VOCAB_JSON: &str = include_str!("../assets/gpt2/vocab.json");
pub const GPT2_MERGES_TXT: &str = include_str!("../assets/gpt2/merges.txt");

/// GPT-2's `<|endoftext|>` id.
pub const GPT2_EOT: u32 = 50256;

fn tk_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{what}: {e}"))
}

/// GPT-2's byte-level BPE, as Hugging Face's `GPT2TokenizerFast`.
pub fn gpt2_bpe() -> Result<Tokenizer> {
    let vocab: HashMap<String, u32> =
        serde_json::from_str(GPT2_VOCAB_JSON).map_err(|e| tk_err("assets/gpt2/vocab.json", e))?;
    let merges: Vec<(String, String)> = GPT2_MERGES_TXT
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split(' ');
            match (it.next(), it.next()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(tk_err("assets/gpt2/merges.txt", format!("bad line {l:?}"))),
            }
        })
        .collect::<Result<_>>()?;
    let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tk_err("GPT-2 BPE", e))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// Load a `tokenizer.json`.
pub fn load(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| tk_err(&path.display().to_string(), e))
}

/// A character-level tokenizer over `chars`: one token per character, ids in code-point
/// order (as nanoGPT's `sorted(set(data))`), a BPE without merges or pre-tokenization
/// whose decoder concatenates the characters.
pub fn char_level(chars: std::collections::BTreeSet<char>) -> Result<Tokenizer> {
    let vocab: tokenizers::models::bpe::Vocab = chars
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .map_err(|e| tk_err("character tokenizer", e))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_decoder(Some(tokenizers::decoders::fuse::Fuse::new()));
    Ok(tok)
}

/// Parse the text of a `tokenizer.json`; `origin` names it in errors.
pub fn from_json(text: &str, origin: &str) -> Result<Tokenizer> {
    text.parse::<Tokenizer>().map_err(|e| tk_err(origin, e))
}

/// The tokenizer of the model in `dir`: its `tokenizer.json` if there is one, GPT-2's
/// BPE for a model with GPT-2's vocabulary size, otherwise none (ids only).
pub fn for_model_dir(dir: &Path, vocab_size: usize) -> Result<Option<Tokenizer>> {
    let file = dir.join("tokenizer.json");
    if file.exists() {
        return load(&file).map(Some);
    }
    if vocab_size == 50257 {
        return gpt2_bpe().map(Some);
    }
    Ok(None)
}

/// Token ids of `text`.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tok
        .encode(text, false)
        .map_err(|e| tk_err("encoding", e))?
        .get_ids()
        .to_vec())
}

/// Text of `ids`.
pub fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    tok.decode(ids, false).map_err(|e| tk_err("decoding", e))
}
