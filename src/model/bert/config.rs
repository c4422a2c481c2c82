//! BERT's configuration: the Hugging Face `config.json` fields wgformer reads and writes
//! (`BertConfig`'s names), with validation that names the file and field.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The BERT hyperparameters, named as in Hugging Face's `BertConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// V
    pub vocab_size: usize,
    /// C
    pub hidden_size: usize,
    /// L
    pub num_hidden_layers: usize,
    /// NH
    pub num_attention_heads: usize,
    /// F
    pub intermediate_size: usize,
    /// "gelu" (exact erf) is what BERT uses.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// maxT
    pub max_position_embeddings: usize,
    #[serde(default = "default_types")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    /// Classification labels, when the model carries a classifier (`id2label` order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_types() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// A small BERT for pretraining from scratch.
    pub fn new(vocab: usize, hidden: usize, layers: usize, heads: usize, max_t: usize) -> Self {
        BertConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            intermediate_size: 4 * hidden,
            hidden_act: default_act(),
            max_position_embeddings: max_t,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            labels: None,
        }
    }

    /// Whether a config.json's text describes a BERT (`model_type` "bert", or BERT's keys).
    pub fn is_bert_json(text: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
            return false;
        };
        v.get("model_type").and_then(|m| m.as_str()) == Some("bert")
            || (v.get("hidden_size").is_some() && v.get("num_hidden_layers").is_some())
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let mut cfg: BertConfig = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{origin}: not a BERT config.json: {e}")))?;
        // Hugging Face's classifiers keep their labels in id2label.
        if cfg.labels.is_none() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                if let Some(m) = v.get("id2label").and_then(|m| m.as_object()) {
                    let mut pairs: Vec<(usize, String)> = m
                        .iter()
                        .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                        .collect();
                    pairs.sort();
                    if pairs.len() == m.len() && pairs.iter().enumerate().all(|(i, p)| p.0 == i) {
                        let names: Vec<String> = pairs.into_iter().map(|p| p.1).collect();
                        // A base model's default labels are not a classifier.
                        let has_head = v
                            .get("architectures")
                            .and_then(|a| a.as_array())
                            .is_some_and(|a| {
                                a.iter()
                                    .any(|x| x.as_str() == Some("BertForSequenceClassification"))
                            });
                        if has_head {
                            cfg.labels = Some(names);
                        }
                    }
                }
            }
        }
        cfg.validate(origin)?;
        Ok(cfg)
    }

    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("{origin}: {m}")));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_size / self.num_attention_heads > crate::kernels::mha::MAX_HEAD_SIZE {
            return bad(format!(
                "head size exceeds {}",
                crate::kernels::mha::MAX_HEAD_SIZE
            ));
        }
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act {:?}: wgformer's BERT implements \"gelu\" (exact erf)",
                self.hidden_act
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return bad("layer_norm_eps must be positive".into());
        }
        if let Some(l) = &self.labels {
            if l.len() < 2 {
                return bad("a classifier needs at least two labels".into());
            }
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The config.json wgformer writes: Hugging Face's keys, with `architectures` naming
    /// the head the checkpoint carries.
    pub fn to_hf_json(&self, architecture: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serializes");
        let m = v.as_object_mut().expect("an object");
        m.remove("labels");
        m.insert("model_type".into(), "bert".into());
        m.insert("architectures".into(), serde_json::json!([architecture]));
        m.insert("position_embedding_type".into(), "absolute".into());
        if let Some(labels) = &self.labels {
            let id2label: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l.clone().into()))
                .collect();
            let label2id: serde_json::Map<String, serde_json::Value> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| (l.clone(), i.into()))
                .collect();
            m.insert("id2label".into(), id2label.into());
            m.insert("label2id".into(), label2id.into());
        }
        v
    }
}
