//! BERT from the kernels: the encoder of Devlin et al. as Hugging Face's `BertModel`
//! computes it (word + position + token-type embeddings, LayerNorm, post-LN layers with
//! bidirectional attention under a padding mask and exact-erf GELU), with the pooler,
//! and one optional head: masked-LM (`BertForMaskedLM`'s, decoder tied to the word
//! embeddings) or sequence classification (`BertForSequenceClassification`'s).
//!
//! - [`config`] — `config.json`.
//! - [`params`] — the parameter list, GPU structs, Hugging Face names and layouts.
//! - [`graph`] — activations and the recorded passes (encoder, embeddings, heads).
//! - [`trainer`] — a training step as one submit, for either head.
//!
//! Checkpoints load from Hugging Face safetensors with or without the `bert.` prefix
//! (sentence-transformers' all-MiniLM-L6-v2 has none) and save as `save_pretrained` does.

pub mod config;
pub mod graph;
pub mod params;
pub mod trainer;

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

pub use config::BertConfig;
pub use params::Head;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Needs, Tensor};
use crate::model::checkpoint::write_atomic;
use params::{
    bert_params, init_values, is_base, transpose, BertParam, BertTensors, HfSource, BASE_PREFIX,
};

/// A BERT's weights on the GPU.
#[derive(Clone)]
pub struct Bert {
    pub config: BertConfig,
    pub head: Head,
    pub params: BertTensors,
    /// (maxT, C) zeros: the "positions" of the token-type embedding pass.
    pub zero_pe: Tensor,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl Bert {
    pub fn from_values(
        ctx: &GpuContext,
        config: BertConfig,
        head: Head,
        values: &[Vec<f32>],
    ) -> Result<Self> {
        let params = bert_params(&config, head);
        if values.len() != params.len() {
            return Err(Error::Invalid(format!(
                "this BERT has {} parameter tensors, got {}",
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
        let tensors = BertTensors::new(ctx, &config, head, "param", Some(values))?;
        let zero_pe = Tensor::zeros(
            ctx,
            "zero positions",
            &[config.max_position_embeddings, config.hidden_size],
            DType::F32,
        )?;
        Ok(Bert {
            config,
            head,
            params: tensors,
            zero_pe,
        })
    }

    /// A fresh BERT initialised from `seed`.
    pub fn init(ctx: &GpuContext, config: BertConfig, head: Head, seed: u64) -> Result<Self> {
        let values = init_values(&config, head, seed);
        Self::from_values(ctx, config, head, &values)
    }

    /// Load a Hugging Face BERT directory (`config.json`, `model.safetensors`) with the
    /// head it carries: classifier if config.json lists labels, masked-LM if the file has
    /// `cls.predictions.*`, none otherwise.
    pub fn load(ctx: &GpuContext, dir: &Path) -> Result<Self> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let file = dir.join("model.safetensors");
        let bytes = std::fs::read(&file).map_err(|e| io_err(&file, e))?;
        let origin = file.display().to_string();
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::Invalid(format!("{origin}: not a safetensors file: {e}")))?;
        let names = st.names();
        let head = if let Some(l) = &config.labels {
            Head::Classify(l.len())
        } else if names.iter().any(|n| n.starts_with("cls.predictions.")) {
            Head::Mlm
        } else {
            Head::None
        };
        let values = values_from(&st, &config, head, &origin)?;
        Self::from_values(ctx, config, head, &values)
    }

    /// The same encoder and pooler with a different head: the old head is dropped, a new
    /// one initialised from `seed` (N(0, 0.02) weights, zero biases, unit norms). A
    /// classifier takes `labels` (one per class, in order).
    pub async fn with_head(
        self,
        ctx: &GpuContext,
        head: Head,
        labels: Option<Vec<String>>,
        seed: u64,
    ) -> Result<Self> {
        let mut config = self.config.clone();
        config.labels = match head {
            Head::Classify(n) => match labels {
                Some(l) if l.len() == n => Some(l),
                _ => {
                    return Err(Error::Invalid(format!(
                        "a classifier of {n} classes needs {n} label names"
                    )))
                }
            },
            _ => None,
        };
        config.validate("the new head")?;
        let old = self.params.read_all(ctx).await?;
        let old_names: Vec<String> = bert_params(&self.config, self.head)
            .into_iter()
            .map(|p| p.spec.name)
            .collect();
        let fresh = init_values(&config, head, seed);
        let values: Vec<Vec<f32>> = bert_params(&config, head)
            .iter()
            .zip(fresh)
            .map(
                |(p, f)| match old_names.iter().position(|n| *n == p.spec.name) {
                    Some(i) if is_base(&p.spec.name) => old[i].clone(),
                    _ => f,
                },
            )
            .collect();
        Self::from_values(ctx, config, head, &values)
    }

    /// Save as a Hugging Face directory (`config.json`, `model.safetensors`), atomically.
    pub async fn save(&self, ctx: &GpuContext, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let values = self.params.read_all(ctx).await?;
        save_values(
            &dir.join("model.safetensors"),
            &self.config,
            self.head,
            &values,
        )?;
        let arch = match self.head {
            Head::None => "BertModel",
            Head::Mlm => "BertForMaskedLM",
            Head::Classify(_) => "BertForSequenceClassification",
        };
        let json =
            serde_json::to_string_pretty(&self.config.to_hf_json(arch)).expect("config serializes");
        write_atomic(&dir.join("config.json"), json.as_bytes())
    }

    /// Device limits a run at (B, T) needs: its largest buffer.
    pub fn needs(config: &BertConfig, b: usize, t: usize) -> Needs {
        let c = config.hidden_size as u64;
        let (b, t) = (b as u64, t as u64);
        let biggest = [
            b * t * config.vocab_size as u64,
            config.vocab_size as u64 * c,
            b * t * config.intermediate_size as u64,
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

/// Read one f32 tensor `name` (with or without the `bert.` prefix for encoder tensors)
/// of `shape`.
fn read(st: &SafeTensors, origin: &str, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let prefixed = format!("{BASE_PREFIX}{name}");
    let (key, view) = match st.tensor(name) {
        Ok(v) => (name.to_string(), v),
        Err(_) => match st.tensor(&prefixed) {
            Ok(v) => (prefixed, v),
            Err(_) => {
                return Err(Error::Invalid(format!(
                    "{origin}: missing tensor {name} (or {prefixed}), expected shape {shape:?}"
                )))
            }
        },
    };
    if view.dtype() != Dtype::F32 {
        return Err(Error::DType {
            tensor: format!("{origin}: {key}"),
            expected: "F32".into(),
            found: format!("{:?}", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(Error::Shape {
            tensor: format!("{origin}: {key}"),
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    Ok(bytemuck::pod_collect_to_vec(view.data()))
}

fn values_from(
    st: &SafeTensors,
    cfg: &BertConfig,
    head: Head,
    origin: &str,
) -> Result<Vec<Vec<f32>>> {
    let c = cfg.hidden_size;
    bert_params(cfg, head)
        .iter()
        .map(|p| match &p.hf {
            HfSource::Plain(n) => read(st, origin, n, &p.spec.shape),
            HfSource::Linear(n) => {
                let (i, o) = (p.spec.shape[0], p.spec.shape[1]);
                Ok(transpose(&read(st, origin, n, &[o, i])?, o, i))
            }
            HfSource::Qkv { prefix, weight } => {
                let mut rows = Vec::with_capacity(3 * c * if *weight { c } else { 1 });
                for part in ["query", "key", "value"] {
                    if *weight {
                        rows.extend(read(
                            st,
                            origin,
                            &format!("{prefix}.{part}.weight"),
                            &[c, c],
                        )?);
                    } else {
                        rows.extend(read(st, origin, &format!("{prefix}.{part}.bias"), &[c])?);
                    }
                }
                // (3C, C) stacked like torch's in_proj_weight → (C, 3C).
                Ok(if *weight {
                    transpose(&rows, 3 * c, c)
                } else {
                    rows
                })
            }
        })
        .collect()
}

/// The Hugging Face tensors of `values`: (name, shape, data), encoder names prefixed with
/// `bert.` when the model has a head.
pub fn to_hf(
    cfg: &BertConfig,
    head: Head,
    values: &[Vec<f32>],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let c = cfg.hidden_size;
    let prefix = |n: &str| {
        if head != Head::None && is_base(n) {
            format!("{BASE_PREFIX}{n}")
        } else {
            n.to_string()
        }
    };
    let mut out = Vec::new();
    let params: Vec<BertParam> = bert_params(cfg, head);
    for (p, v) in params.iter().zip(values) {
        match &p.hf {
            HfSource::Plain(n) => out.push((prefix(n), p.spec.shape.clone(), v.clone())),
            HfSource::Linear(n) => {
                let (i, o) = (p.spec.shape[0], p.spec.shape[1]);
                out.push((prefix(n), vec![o, i], transpose(v, i, o)));
            }
            HfSource::Qkv {
                prefix: pre,
                weight,
            } => {
                let stacked = if *weight {
                    transpose(v, c, 3 * c)
                } else {
                    v.clone()
                };
                let per = stacked.len() / 3;
                for (k, part) in ["query", "key", "value"].iter().enumerate() {
                    let kind = if *weight { "weight" } else { "bias" };
                    let shape = if *weight { vec![c, c] } else { vec![c] };
                    out.push((
                        prefix(&format!("{pre}.{part}.{kind}")),
                        shape,
                        stacked[k * per..(k + 1) * per].to_vec(),
                    ));
                }
            }
        }
    }
    out
}

/// Write `values` as a Hugging Face safetensors file, atomically.
pub fn save_values(path: &Path, cfg: &BertConfig, head: Head, values: &[Vec<f32>]) -> Result<()> {
    let tensors = to_hf(cfg, head, values);
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
