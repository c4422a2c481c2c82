//! `wgformer embed`: sentence embeddings with a BERT (e.g. all-MiniLM-L6-v2), from
//! --text or stdin line by line, as JSON or one vector per line.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::infer::embed::{embed_texts, embedding_tokenizer, max_seq_length};
use crate::model::bert::{Bert, BertConfig};

/// Flags of `wgformer embed`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    /// A BERT directory: config.json, model.safetensors, tokenizer.json (and
    /// sentence_bert_config.json for the maximum length), e.g. all-MiniLM-L6-v2 as
    /// scripts/fetch-minilm unpacks it.
    #[arg(long)]
    pub model: PathBuf,
    /// Text to embed (repeatable); without it, each line of stdin is one input (empty
    /// lines included).
    #[arg(long)]
    pub text: Vec<String>,
    /// Output: json (one object with every text and vector) or lines (one vector per
    /// line, space-separated).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Inputs run together (padded to the longest of them).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

pub fn embed(opts: &GpuOptions, args: EmbedArgs) -> Result<bool> {
    if !matches!(args.format.as_str(), "json" | "lines") {
        return Err(Error::Invalid(format!(
            "--format {:?}: expected json or lines",
            args.format
        )));
    }
    let config = BertConfig::from_file(&args.model.join("config.json"))?;
    let max_len = max_seq_length(&args.model, config.max_position_embeddings);
    let tok = embedding_tokenizer(&args.model, max_len)?;
    let texts: Vec<String> = if args.text.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::Io {
                path: "stdin".into(),
                source: e,
            })?
    } else {
        args.text.clone()
    };
    let ctx = pollster::block_on(GpuContext::with_needs(
        opts,
        &Bert::needs(&config, args.batch, max_len),
    ))?;
    let model = Bert::load(&ctx, &args.model)?;
    let vectors = ctx.block_on(embed_texts(&ctx, &model, &tok, &texts, args.batch))?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::Io {
        path: "stdout".into(),
        source: e,
    };
    if args.format == "json" {
        let items: Vec<serde_json::Value> = texts
            .iter()
            .zip(&vectors)
            .map(|(t, v)| serde_json::json!({"text": t, "embedding": v}))
            .collect();
        let doc = serde_json::json!({"model": args.model.display().to_string(), "dim": config.hidden_size, "embeddings": items});
        writeln!(out, "{doc}").map_err(io)?;
    } else {
        for v in &vectors {
            let line: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            writeln!(out, "{}", line.join(" ")).map_err(io)?;
        }
    }
    Ok(true)
}
