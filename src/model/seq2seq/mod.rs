//! The original encoder–decoder Transformer (`torch.nn.Transformer` with embeddings scaled
//! by √C, sinusoidal positions, post-LN ReLU blocks, a final LayerNorm on each stack and
//! the output tied to the target embedding), assembled from the same kernels as GPT-2.
//!
//! - [`config`] — `config.json`, in the fixtures' form.
//! - [`params`] — the parameter list, the GPU structs, and torch state-dict interop.
//! - [`graph`] — activations and the recorded forward, loss and backward passes.
//! - [`trainer`] — one training step as one submit (AdamW, clipping, accumulation).
//!
//! Checkpoints are torch state dicts in safetensors, named as `torch.nn.Transformer`
//! inside a module with `src_emb` and `tgt_emb` (the fixture's names), with
//! `config.json` beside them: torch loads what wgformer saves and the other way round.

pub mod config;
pub mod graph;
pub mod params;
pub mod trainer;

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

pub use config::Seq2seqConfig;
pub use trainer::Seq2seqTrainer;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Needs, Tensor};
use crate::kernels::encoder::sinusoidal_positions;
use crate::model::checkpoint::write_atomic;
use params::{
    from_torch, init_values, seq2seq_params, torch_tensors, values_to_torch, Seq2seqTensors,
};

/// An encoder–decoder's weights on the GPU, and its positional table.
#[derive(Clone)]
pub struct Seq2seq {
    pub config: Seq2seqConfig,
    pub params: Seq2seqTensors,
    pub pe: Tensor, // (max_len, C): the sinusoidal table, constant
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl Seq2seq {
    /// Upload `values` (canonical order of `params::seq2seq_params`) as the weights.
    pub fn from_values(
        ctx: &GpuContext,
        config: Seq2seqConfig,
        values: &[Vec<f32>],
    ) -> Result<Self> {
        let params = seq2seq_params(&config);
        if values.len() != params.len() {
            return Err(Error::Invalid(format!(
                "this encoder–decoder has {} parameter tensors, got {}",
                params.len(),
                values.len()
            )));
        }
        for (p, v) in params.iter().zip(values) {
            if v.len() != p.spec.numel() {
                return Err(Error::Shape {
                    tensor: p.spec.name.clone(),
                    expected: p.spec.shape.clone(),
                    found: vec![v.len()],
                });
            }
        }
        let tensors = Seq2seqTensors::new(ctx, &config, "param", Some(values))?;
        let (max_len, c) = (config.max_len, config.d_model);
        let pe = Tensor::from_f32(
            ctx,
            "positions",
            &[max_len, c],
            &sinusoidal_positions(max_len, c),
        )?;
        Ok(Seq2seq {
            config,
            params: tensors,
            pe,
        })
    }

    /// A fresh model initialised from `seed` (see `params::init_values`).
    pub fn init(ctx: &GpuContext, config: Seq2seqConfig, seed: u64) -> Result<Self> {
        let values = init_values(&config, seed);
        Self::from_values(ctx, config, &values)
    }

    /// Load a directory with `config.json` and `model.safetensors` (a torch state dict),
    /// or such a `.safetensors` file with `config.json` beside it.
    pub fn load(ctx: &GpuContext, path: &Path) -> Result<Self> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join("model.safetensors"))
        } else {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.to_path_buf(),
            )
        };
        let config = Seq2seqConfig::from_file(&dir.join("config.json"))?;
        let values = load_values(&file, &config)?;
        Self::from_values(ctx, config, &values)
    }

    /// Save as `config.json` and `model.safetensors` (torch names and layouts) in `dir`,
    /// each written atomically.
    pub async fn save(&self, ctx: &GpuContext, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let values = self.params.read_all(ctx).await?;
        save_values(&dir.join("model.safetensors"), &self.config, &values)?;
        let json = serde_json::to_string_pretty(&self.config.to_json()).expect("config serializes");
        write_atomic(&dir.join("config.json"), json.as_bytes())
    }

    /// Device limits a run at (B, S, T) needs beyond WebGPU's defaults: its largest buffer.
    pub fn needs(config: &Seq2seqConfig, b: usize, s: usize, t: usize) -> Needs {
        let c = config.d_model as u64;
        let (b, s, t) = (b as u64, s as u64, t as u64);
        let biggest = [
            b * t * config.tgt_vocab as u64,
            config.src_vocab.max(config.tgt_vocab) as u64 * c,
            b * s.max(t) * config.ffn.max(3 * config.d_model) as u64,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            * 4;
        Needs {
            max_buffer_size: biggest,
            ..Needs::default()
        }
    }
}

/// Every parameter of `cfg` from the torch state dict in `path` (canonical order). Each
/// tensor is checked by name, dtype and shape; names outside the model are reported.
pub fn load_values(path: &Path, cfg: &Seq2seqConfig) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    values_from_bytes(&bytes, cfg, &path.display().to_string())
}

/// [`load_values`] from the file's bytes; `file` names it in errors.
pub fn values_from_bytes(bytes: &[u8], cfg: &Seq2seqConfig, file: &str) -> Result<Vec<Vec<f32>>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Invalid(format!("{file}: not a safetensors file: {e}")))?;
    let mut torch: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (name, shape) in torch_tensors(cfg) {
        let view = st.tensor(&name).map_err(|_| {
            Error::Invalid(format!(
                "{file}: missing tensor {name}, expected shape {shape:?}"
            ))
        })?;
        if view.dtype() != Dtype::F32 {
            return Err(Error::DType {
                tensor: format!("{file}: {name}"),
                expected: "F32".into(),
                found: format!("{:?}", view.dtype()),
            });
        }
        if view.shape() != shape.as_slice() {
            return Err(Error::Shape {
                tensor: format!("{file}: {name}"),
                expected: shape,
                found: view.shape().to_vec(),
            });
        }
        torch.insert(name, bytemuck::pod_collect_to_vec(view.data()));
    }
    let extra: Vec<&str> = st
        .names()
        .into_iter()
        .filter(|n| !torch.contains_key(*n))
        .collect();
    if !extra.is_empty() {
        return Err(Error::Invalid(format!(
            "{file}: tensors not in an encoder–decoder of this config: {} (do config.json's \
             layer counts match the checkpoint?)",
            extra.join(", ")
        )));
    }
    Ok(seq2seq_params(cfg)
        .iter()
        .map(|p| from_torch(p, &torch[&p.torch.name]))
        .collect())
}

/// Write `values` (canonical order) as a torch state dict in safetensors, atomically.
pub fn save_values(path: &Path, cfg: &Seq2seqConfig, values: &[Vec<f32>]) -> Result<()> {
    let tensors = values_to_torch(cfg, values);
    let mut views = BTreeMap::new();
    for (name, shape, v) in &tensors {
        let view = TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(v))
            .map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        views.insert(name.clone(), view);
    }
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}
