//! GPT-2 configuration: the Hugging Face `config.json` fields wgformer reads and writes,
//! presets, and validation with messages that name the file and field. It does not know
//! about tensors; `model::params` turns a config into parameter shapes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The GPT-2 hyperparameters, named as in Hugging Face's `GPT2Config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// V
    pub vocab_size: usize,
    /// maxT: the context length
    pub n_positions: usize,
    /// C
    pub n_embd: usize,
    /// L
    pub n_layer: usize,
    /// NH
    pub n_head: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Width of the MLP; `None` means 4·C.
    #[serde(default)]
    pub n_inner: Option<usize>,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".to_string()
}

/// Named model sizes for `--preset`.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "gpt2",
        "GPT-2 124M: 12 layers, 12 heads, 768 channels, 1024 context, 50257 tokens",
    ),
    (
        "gpt2-medium",
        "GPT-2 350M: 24 layers, 16 heads, 1024 channels, 1024 context",
    ),
    (
        "baby",
        "nanoGPT's baby GPT: 4 layers, 4 heads, 128 channels, 64 context",
    ),
    (
        "tiny",
        "2 layers, 4 heads, 48 channels, 32 context: for tests",
    ),
];

impl Gpt2Config {
    pub fn new(
        vocab_size: usize,
        n_positions: usize,
        n_embd: usize,
        n_layer: usize,
        n_head: usize,
    ) -> Self {
        Gpt2Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            layer_norm_epsilon: 1e-5,
            activation_function: default_activation(),
            n_inner: None,
        }
    }

    /// A preset by name (see [`PRESETS`]). `vocab_size` overrides the preset's vocabulary
    /// (the small presets are meant for whatever tokenizer the data uses).
    pub fn preset(name: &str, vocab_size: Option<usize>) -> Result<Self> {
        let c = match name {
            "gpt2" | "124M" | "gpt2-124M" => Self::new(50257, 1024, 768, 12, 12),
            "gpt2-medium" | "350M" | "gpt2-350M" => Self::new(50257, 1024, 1024, 24, 16),
            "baby" => Self::new(65, 64, 128, 4, 4),
            "tiny" => Self::new(101, 32, 48, 2, 4),
            _ => {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                return Err(Error::Invalid(format!(
                    "unknown preset {name:?}; expected one of {}",
                    names.join(", ")
                )));
            }
        };
        let c = Gpt2Config {
            vocab_size: vocab_size.unwrap_or(c.vocab_size),
            ..c
        };
        c.validate("preset")?;
        Ok(c)
    }

    /// Read and validate a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parse and validate the text of a Hugging Face `config.json`; `origin` names it.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let c: Gpt2Config = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("{origin}: not a GPT-2 config.json: {e}")))?;
        c.validate(origin)?;
        Ok(c)
    }

    /// Check the sizes make a model wgformer can build; `origin` names the source.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("{origin}: {msg}")));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return bad(format!(
                "activation_function {:?} is not supported; wgformer implements the tanh \
                 approximation (gelu_new, gelu_pytorch_tanh)",
                self.activation_function
            ));
        }
        if self.layer_norm_epsilon.is_nan() || self.layer_norm_epsilon <= 0.0 {
            return bad("layer_norm_epsilon must be positive".into());
        }
        Ok(())
    }

    /// HS
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Width of the MLP's hidden layer (4·C unless `n_inner` says otherwise).
    pub fn mlp_width(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// The `config.json` Hugging Face's GPT2LMHeadModel loads.
    pub fn to_hf_json(&self) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_ctx": self.n_positions,
            "n_embd": self.n_embd,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.n_inner,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation_function": self.activation_function,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "tie_word_embeddings": true,
            "use_cache": true,
            "torch_dtype": "float32",
        })
    }
}
