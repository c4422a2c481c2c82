//! Sentence embeddings with a BERT, as sentence-transformers computes them: tokenize
//! with the model's tokenizer ([CLS] … [SEP], truncated at the model's `max_seq_length`
//! from `sentence_bert_config.json`, else its positions), run the encoder, mean-pool the
//! last layer over the attention mask, L2-normalise. Inputs are batched and each batch
//! is padded to its longest row.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::model::bert::trainer::Embedder;
use crate::model::bert::Bert;

/// A BERT's tokenizer set up for embedding: no padding (batches pad themselves), and
/// truncation at `max_len` tokens, specials included.
pub fn embedding_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer> {
    let mut tok = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| Error::Invalid(format!("{}: truncation: {e}", dir.display())))?;
    Ok(tok)
}

/// The longest input a model directory embeds: sentence-transformers'
/// `max_seq_length`, else the model's positions.
pub fn max_seq_length(dir: &Path, positions: usize) -> usize {
    std::fs::read_to_string(dir.join("sentence_bert_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
        .map_or(positions, |m| (m as usize).min(positions))
}

/// Token ids of `text` with the tokenizer's template ([CLS] … [SEP]).
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .encode(text, true)
        .map_err(|e| Error::Invalid(format!("tokenizing {text:?}: {e}")))?;
    Ok(enc.get_ids().to_vec())
}

/// Embed `texts` in batches of up to `batch`: one unit vector of C floats each.
pub async fn embed_texts(
    ctx: &GpuContext,
    model: &Bert,
    tok: &Tokenizer,
    texts: &[String],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| encode(tok, t))
        .collect::<Result<_>>()?;
    embed_ids(ctx, model, &ids, batch).await
}

/// Embed rows of token ids (specials included) in batches of up to `batch`.
pub async fn embed_ids(
    ctx: &GpuContext,
    model: &Bert,
    rows: &[Vec<u32>],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch.max(1)) {
        let t = chunk.iter().map(Vec::len).max().unwrap_or(1).max(1);
        if t > model.config.max_position_embeddings {
            return Err(Error::Invalid(format!(
                "an input of {t} tokens exceeds the model's {} positions",
                model.config.max_position_embeddings
            )));
        }
        let e = Embedder::new(ctx, model, chunk.len(), t)?;
        out.extend(e.embed(ctx, chunk).await?);
    }
    Ok(out)
}
