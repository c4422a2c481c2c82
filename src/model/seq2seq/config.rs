//! The encoder–decoder Transformer's configuration, read from and written to a
//! `config.json` in the form of `../shared/fixtures/seq2seq-tiny` (sizes as numbers, every
//! architectural convention spelled out as text). wgformer writes the same keys plus the
//! ones a fixture leaves implicit (separate vocabularies, EOS, context length, eps as a
//! number), so its checkpoints and the fixtures load through one parser. Every
//! convention wgformer does not implement is rejected with the key that states it.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// `torch.nn.Transformer` with embeddings, sinusoidal positions and a tied output.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2seqConfig {
    /// C
    pub d_model: usize,
    /// NH
    pub heads: usize,
    /// Encoder blocks
    pub encoder_layers: usize,
    /// Decoder blocks
    pub decoder_layers: usize,
    /// F: width of the ReLU feed-forward
    pub ffn: usize,
    /// Rows of `src_emb`
    pub src_vocab: usize,
    /// Rows of `tgt_emb`, which is also the output head
    pub tgt_vocab: usize,
    /// Longest source or target the positional table covers
    pub max_len: usize,
    pub pad_id: u32,
    pub bos_id: u32,
    pub eos_id: u32,
    pub layer_norm_eps: f64,
}

/// Context length given to fixtures, whose configs do not state one.
pub const DEFAULT_MAX_LEN: usize = 512;

fn invalid(origin: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{origin}: {msg}"))
}

fn usize_key(m: &Map<String, Value>, origin: &str, key: &str) -> Result<Option<usize>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            invalid(
                origin,
                format!("\"{key}\" must be a non-negative integer, found {v}"),
            )
        }),
    }
}

fn required(m: &Map<String, Value>, origin: &str, key: &str) -> Result<usize> {
    usize_key(m, origin, key)?
        .ok_or_else(|| invalid(origin, format!("missing \"{key}\" (a positive integer)")))
}

/// The number after "eps" in a text such as "post-LN, eps 1e-5, final LayerNorm ...".
fn eps_in(text: &str) -> Option<f64> {
    let rest = &text[text.find("eps")? + 3..];
    let num: String = rest
        .trim_start_matches([' ', '=', ':'])
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        .collect();
    num.parse().ok()
}

impl Seq2seqConfig {
    /// A config with torch.nn.Transformer's conventions and ids PAD 0, BOS 1, EOS 2.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d_model: usize,
        heads: usize,
        encoder_layers: usize,
        decoder_layers: usize,
        ffn: usize,
        src_vocab: usize,
        tgt_vocab: usize,
        max_len: usize,
    ) -> Self {
        Seq2seqConfig {
            d_model,
            heads,
            encoder_layers,
            decoder_layers,
            ffn,
            src_vocab,
            tgt_vocab,
            max_len,
            pad_id: 0,
            bos_id: 1,
            eos_id: 2,
            layer_norm_eps: 1e-5,
        }
    }

    /// Whether `config.json` text describes an encoder–decoder (rather than a GPT-2).
    pub fn is_seq2seq_json(text: &str) -> bool {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| {
                v.as_object()
                    .map(|m| m.contains_key("d_model") && m.contains_key("decoder_layers"))
            })
            .unwrap_or(false)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parse a fixture-form or wgformer `config.json`; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid(origin, format!("not JSON: {e}")))?;
        let m = v
            .as_object()
            .ok_or_else(|| invalid(origin, "expected a JSON object"))?;
        let text_key = |key: &str| m.get(key).and_then(Value::as_str).unwrap_or("");
        let activation = text_key("activation");
        if !activation.is_empty() && activation != "relu" {
            return Err(invalid(
                origin,
                format!(
                    "\"activation\": {activation:?}; wgformer's encoder–decoder implements relu"
                ),
            ));
        }
        let norm = text_key("norm").to_lowercase();
        if !norm.is_empty() && !norm.contains("post") {
            return Err(invalid(origin, format!("\"norm\": {norm:?}; wgformer implements post-LN blocks with a final LayerNorm on each stack")));
        }
        let pe = text_key("positional_encoding").to_lowercase();
        if !pe.is_empty() && !pe.contains("sinusoidal") {
            return Err(invalid(
                origin,
                format!(
                    "\"positional_encoding\": {pe:?}; wgformer implements the sinusoidal table"
                ),
            ));
        }
        let scale = text_key("embedding_scale");
        if !scale.is_empty() && scale.replace(' ', "") != "sqrt(d_model)" {
            return Err(invalid(
                origin,
                format!(
                    "\"embedding_scale\": {scale:?}; wgformer scales embeddings by sqrt(d_model)"
                ),
            ));
        }
        let output = text_key("output");
        if !output.is_empty() && !output.contains("tgt_emb") {
            return Err(invalid(
                origin,
                format!("\"output\": {output:?}; wgformer ties the output to tgt_emb"),
            ));
        }
        let vocab = usize_key(m, origin, "vocab")?;
        let src_vocab = usize_key(m, origin, "src_vocab")?.or(vocab);
        let tgt_vocab = usize_key(m, origin, "tgt_vocab")?.or(vocab);
        let (Some(src_vocab), Some(tgt_vocab)) = (src_vocab, tgt_vocab) else {
            return Err(invalid(
                origin,
                "missing \"vocab\" (or \"src_vocab\" and \"tgt_vocab\")",
            ));
        };
        let eps = match m.get("layer_norm_eps").and_then(Value::as_f64) {
            Some(e) => e,
            None => eps_in(&norm).unwrap_or(1e-5),
        };
        let id = |key: &str, default: u32| -> Result<u32> {
            Ok(usize_key(m, origin, key)?.map_or(default, |n| n as u32))
        };
        let cfg = Seq2seqConfig {
            d_model: required(m, origin, "d_model")?,
            heads: required(m, origin, "heads")?,
            encoder_layers: required(m, origin, "encoder_layers")?,
            decoder_layers: required(m, origin, "decoder_layers")?,
            ffn: required(m, origin, "ffn")?,
            src_vocab,
            tgt_vocab,
            max_len: usize_key(m, origin, "max_len")?.unwrap_or(DEFAULT_MAX_LEN),
            pad_id: id("pad_id", 0)?,
            bos_id: id("bos_id", 1)?,
            eos_id: id("eos_id", 2)?,
            layer_norm_eps: eps,
        };
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Error naming `origin` and the field unless the sizes make a model.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let positive = [
            ("d_model", self.d_model),
            ("heads", self.heads),
            ("decoder_layers", self.decoder_layers),
            ("ffn", self.ffn),
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("max_len", self.max_len),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(invalid(origin, format!("{name} must be positive")));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(invalid(
                origin,
                format!(
                    "d_model {} is not a multiple of heads {}",
                    self.d_model, self.heads
                ),
            ));
        }
        let hs = self.d_model / self.heads;
        if hs > crate::kernels::mha::MAX_HEAD_SIZE {
            return Err(invalid(
                origin,
                format!(
                    "head size {hs} exceeds the attention kernels' {}",
                    crate::kernels::mha::MAX_HEAD_SIZE
                ),
            ));
        }
        for (name, id) in [
            ("pad_id", self.pad_id),
            ("bos_id", self.bos_id),
            ("eos_id", self.eos_id),
        ] {
            if id as usize >= self.tgt_vocab {
                return Err(invalid(
                    origin,
                    format!(
                        "{name} {id} is outside the target vocabulary of {}",
                        self.tgt_vocab
                    ),
                ));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(invalid(origin, "layer_norm_eps must be positive"));
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.d_model / self.heads
    }

    /// The config as wgformer writes it: the fixture's keys and conventions plus the
    /// numbers a fixture leaves implicit.
    pub fn to_json(&self) -> Value {
        json!({
            "architecture": "seq2seq",
            "d_model": self.d_model,
            "heads": self.heads,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "ffn": self.ffn,
            "src_vocab": self.src_vocab,
            "tgt_vocab": self.tgt_vocab,
            "max_len": self.max_len,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "layer_norm_eps": self.layer_norm_eps,
            "activation": "relu",
            "norm": format!("post-LN, eps {:e}, final LayerNorm on both stacks", self.layer_norm_eps),
            "embedding_scale": "sqrt(d_model)",
            "positional_encoding": "sinusoidal, sin on even dims, cos on odd",
            "output": "logits = decoder_out @ tgt_emb.weight^T (tied)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eps_is_read_from_the_norm_text() {
        assert_eq!(eps_in("post-LN, eps 1e-5, final LayerNorm"), Some(1e-5));
        assert_eq!(eps_in("post-LN, eps=1e-12"), Some(1e-12));
        assert_eq!(eps_in("post-LN"), None);
    }

    #[test]
    fn written_configs_read_back() {
        let mut c = Seq2seqConfig::new(36, 3, 1, 2, 50, 40, 45, 64);
        c.layer_norm_eps = 1e-6;
        let text = c.to_json().to_string();
        assert!(Seq2seqConfig::is_seq2seq_json(&text));
        assert_eq!(Seq2seqConfig::from_json(&text, "x").unwrap(), c);
    }
}
