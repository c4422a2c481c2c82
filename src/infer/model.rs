//! A model ready for inference: a GPT-2's weights on a device, the tokenizer that goes
//! with it (a `tokenizer.json` beside the weights, GPT-2's BPE from `assets/` for a
//! model with GPT-2's vocabulary, or none: token ids only), its end-of-text id and a
//! name. Loads wgformer and Hugging Face checkpoints alike (a directory with
//! `config.json` and `model.safetensors`, or the `.safetensors` file itself). Running it
//! is the generator's and the evaluator's business.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions, Needs};
use crate::kernels::classifier::ClassifierChunk;
use crate::model::gpt2::Gpt2;
use crate::model::half::Precision;
use crate::model::Gpt2Config;
use crate::tokenizer;

/// A GPT-2, its tokenizer and the device it lives on.
pub struct Model {
    pub ctx: Arc<GpuContext>,
    pub gpt2: Gpt2,
    /// `None`: the model takes and gives token ids only.
    pub tokenizer: Option<Tokenizer>,
    /// The end-of-text id generation stops at, if the model has one.
    pub eos: Option<u32>,
    /// How the server and reports name the model: its directory's name.
    pub name: String,
}

/// The directory holding `config.json` for a checkpoint path (a directory, or a
/// `.safetensors` file in one).
fn model_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    }
}

/// `eos_token_id` of the config.json in `dir`, if it names a token of the vocabulary.
fn config_eos(dir: &Path, vocab: usize) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let id = json.get("eos_token_id")?.as_u64()?;
    (id < vocab as u64).then_some(id as u32)
}

/// What a device must allow for a model: its largest weight (wte), and the whole logits
/// of one full-context window (the forward passes of generation read them).
pub fn needs(cfg: &Gpt2Config) -> Needs {
    Gpt2::needs_with(cfg, 1, cfg.n_positions, ClassifierChunk::Whole)
}

/// The configuration of the checkpoint at `path` (its config.json), read without loading
/// the weights, for sizing a device before the load.
pub fn checkpoint_config(path: &Path) -> Result<Gpt2Config> {
    if !path.exists() {
        return Err(missing(path));
    }
    Gpt2Config::from_file(&model_dir(path).join("config.json")).map_err(|e| {
        Error::Invalid(format!(
            "--model {}: expected a directory with config.json and model.safetensors, or a \
             .safetensors file beside a config.json: {e}",
            path.display()
        ))
    })
}

fn missing(path: &Path) -> Error {
    Error::Invalid(format!(
        "--model {}: no such file or directory (expected a checkpoint directory with \
         config.json and model.safetensors, or a .safetensors file)",
        path.display()
    ))
}

/// The larger of two sets of device needs.
pub fn max_needs(a: &Needs, b: &Needs) -> Needs {
    Needs {
        max_buffer_size: a.max_buffer_size.max(b.max_buffer_size),
        max_storage_buffer_binding_size: a
            .max_storage_buffer_binding_size
            .max(b.max_storage_buffer_binding_size),
        shader_f16: a.shader_f16 || b.shader_f16,
    }
}

impl Model {
    /// Open the adapter `opts` selects with the limits the checkpoint at `path` needs, and
    /// load it there.
    pub async fn load(path: &Path, opts: &GpuOptions) -> Result<Self> {
        Self::load_with_needs(path, opts, &Needs::default()).await
    }

    /// [`load`](Self::load), on a device that also meets `extra` (say, an evaluation
    /// batch's logits).
    pub async fn load_with_needs(path: &Path, opts: &GpuOptions, extra: &Needs) -> Result<Self> {
        let cfg = checkpoint_config(path)?;
        let ctx = GpuContext::with_needs(opts, &max_needs(&needs(&cfg), extra)).await?;
        Self::load_on(Arc::new(ctx), path)
    }

    /// Load the checkpoint at `path` onto an open device.
    pub fn load_on(ctx: Arc<GpuContext>, path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(missing(path));
        }
        let gpt2 = Gpt2::load(&ctx, path)?;
        let dir = model_dir(path);
        let vocab = gpt2.config.vocab_size;
        let tokenizer = tokenizer::for_model_dir(&dir, vocab)?;
        let name = std::fs::canonicalize(&dir)
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        Ok(Self::from_parts(ctx, gpt2, tokenizer, name).with_eos(config_eos(&dir, vocab)))
    }

    /// A model from its parts. The end-of-text id is GPT-2's `<|endoftext|>` when the
    /// tokenizer has it; [`with_eos`](Self::with_eos) overrides.
    pub fn from_parts(
        ctx: Arc<GpuContext>,
        gpt2: Gpt2,
        tokenizer: Option<Tokenizer>,
        name: String,
    ) -> Self {
        let vocab = gpt2.config.vocab_size as u32;
        let eos = tokenizer
            .as_ref()
            .and_then(|t| t.token_to_id("<|endoftext|>"))
            .filter(|&id| id < vocab);
        Model {
            ctx,
            gpt2,
            tokenizer,
            eos,
            name,
        }
    }

    /// The model with its matmuls reading weights in `precision` (see
    /// [`Gpt2::with_precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        self.gpt2 = self.gpt2.with_precision(&self.ctx, precision)?;
        Ok(self)
    }

    /// Use `eos` (if `Some`) as the end-of-text id.
    pub fn with_eos(mut self, eos: Option<u32>) -> Self {
        if eos.is_some() {
            self.eos = eos;
        }
        self
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.gpt2.config
    }

    /// Positions the model attends over (n_positions).
    pub fn context(&self) -> usize {
        self.gpt2.config.n_positions
    }

    pub fn vocab_size(&self) -> usize {
        self.gpt2.config.vocab_size
    }

    /// Token ids of `text`; an error if the model has no tokenizer.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match &self.tokenizer {
            Some(t) => tokenizer::encode(t, text),
            None => Err(self.no_tokenizer()),
        }
    }

    /// Text of `ids`; an error if the model has no tokenizer.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.tokenizer {
            Some(t) => tokenizer::decode(t, ids),
            None => Err(self.no_tokenizer()),
        }
    }

    fn no_tokenizer(&self) -> Error {
        Error::Invalid(format!(
            "model {} has no tokenizer (no tokenizer.json, and a vocabulary of {} is not \
             GPT-2's): give token ids instead of text",
            self.name,
            self.vocab_size()
        ))
    }

    /// Error unless every id is in the vocabulary; `what` names where they came from.
    pub fn check_ids(&self, ids: &[u32], what: &str) -> Result<()> {
        let v = self.vocab_size();
        match ids.iter().find(|&&i| i as usize >= v) {
            Some(bad) => Err(Error::Invalid(format!(
                "{what}: token id {bad} is outside the vocabulary of {v} (ids are 0..={})",
                v - 1
            ))),
            None => Ok(()),
        }
    }
}
