//! GPT-2 assembled from the kernels: activations as named structs allocated once per
//! (B, T), a forward pass recorded as a schedule, and a training step (zero grads →
//! forward → fused loss → backward → optional clipping → AdamW) recorded once and
//! replayed with one submit, reading back only the loss; optionally with dropout
//! (counter-based masks, training only) and gradient accumulation over K micro-batches
//! (still one submit per step). Backward walks the forward in reverse, line for line.
//! Checkpoint files are `model::checkpoint`'s business; the training loop, data and
//! schedules of the learning rate belong to `crate::train`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Needs, Readback, Schedule, Tensor};
use crate::kernels::adamw::AdamwStep;
use crate::kernels::attention::{attention_backward, attention_forward};
use crate::kernels::classifier::{
    classifier_crossentropy_backward, classifier_crossentropy_forward,
    classifier_crossentropy_loss, ClassifierChunk, ClassifierChunks,
};
use crate::kernels::crossentropy::{
    crossentropy_backward_inplace, crossentropy_forward, crossentropy_mean, STATS_LEN,
};
use crate::kernels::dropout::{drop_in_place, undrop_in_place, Dropout};
use crate::kernels::encoder::{encoder_backward, encoder_forward};
use crate::kernels::gelu::gelu_backward;
use crate::kernels::gradnorm::GradNorm;
use crate::kernels::layernorm::{
    layernorm_backward, layernorm_forward, residual_layernorm_backward, residual_layernorm_forward,
};
use crate::kernels::lossscale::{loss_scale_apply, LossScaleConfig, LossScaleState, LossScaler};
use crate::kernels::matmul::{
    classifier_backward, classifier_forward, matmul_backward, matmul_backward_bias,
    matmul_backward_gelu_in, matmul_forward, matmul_forward_gelu_in,
};
use crate::kernels::sampling::argmax_forward;
use crate::model::checkpoint::{load_gpt2_safetensors, save_gpt2_safetensors, write_atomic};
use crate::model::config::Gpt2Config;
use crate::model::half::{matmul_input, HalfLayerActs, HalfLayerGrads, HalfWeights, Precision};
use crate::model::optim::{record_update, slots};
use crate::model::params::{gpt2_param_specs, init_params};
use crate::model::step::{mean_loss, MicroCopy, Recorded, StepDropout, StepReplay};
use crate::model::tensors::ParamTensors;

/// A GPT-2's weights on the GPU. A clone shares the device buffers: a generator made
/// from a clone of a model in training sees each update.
#[derive(Clone)]
pub struct Gpt2 {
    pub config: Gpt2Config,
    /// The f32 master weights.
    pub params: ParamTensors,
    /// The f16 path ([`Gpt2::with_precision`]): f16 copies of the matmul weights, and
    /// `params` with each block's matrices swapped for them. `None` in f32.
    pub half: Option<(HalfWeights, ParamTensors)>,
    /// F32, F16 (`half` set) or Mixed (`half` set, and trainers add f16 activations and
    /// loss scaling).
    precision: Precision,
}

impl Gpt2 {
    /// Upload `values` (in `gpt2_param_specs` order) as the model's weights.
    pub fn from_values(ctx: &GpuContext, config: Gpt2Config, values: &[Vec<f32>]) -> Result<Self> {
        let specs = gpt2_param_specs(&config);
        if values.len() != specs.len() {
            return Err(Error::Invalid(format!(
                "GPT-2 with {} layers has {} parameter tensors, got {}",
                config.n_layer,
                specs.len(),
                values.len()
            )));
        }
        for (s, v) in specs.iter().zip(values) {
            if v.len() != s.numel() {
                return Err(Error::Shape {
                    tensor: s.name.clone(),
                    expected: s.shape.clone(),
                    found: vec![v.len()],
                });
            }
        }
        let params = ParamTensors::new(ctx, &config, "param", Some(values))?;
        Ok(Gpt2 {
            config,
            params,
            half: None,
            precision: Precision::F32,
        })
    }

    /// The model with its matmuls reading weights in `precision`: for f16, f16 copies of
    /// every matmul weight are made and filled now (one submit), and kept in step by the
    /// training step. Errors for f16 where the adapter lacks `shader-f16`.
    pub fn with_precision(mut self, ctx: &GpuContext, precision: Precision) -> Result<Self> {
        self.precision = precision;
        self.half = match precision {
            Precision::F32 => None,
            Precision::F16 | Precision::Mixed => {
                let half = HalfWeights::new(ctx, &self.params)?;
                let view = half.compute_view(&self.params);
                Some((half, view))
            }
        };
        self.refresh_half(ctx)?;
        Ok(self)
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The parameters the passes read: `params`, or with f16 the view whose block
    /// matrices are the f16 copies (wte there stays f32, for the embedding).
    pub fn compute_params(&self) -> &ParamTensors {
        match &self.half {
            Some((_, view)) => view,
            None => &self.params,
        }
    }

    /// The tied classifier's weights: wte, or its f16 copy.
    pub fn head(&self) -> &Tensor {
        match &self.half {
            Some((h, _)) => &h.wte,
            None => &self.params.wte,
        }
    }

    /// Record the f16 copies' refresh from the master weights (nothing in f32).
    pub fn record_refresh_half(&self, s: &mut Schedule, ctx: &GpuContext) -> Result<()> {
        match &self.half {
            Some((h, _)) => h.record_refresh(s, ctx, &self.params),
            None => Ok(()),
        }
    }

    /// Refresh the f16 copies now, in their own submit: after the master weights were
    /// written from outside a training step (a resumed checkpoint).
    pub fn refresh_half(&self, ctx: &GpuContext) -> Result<()> {
        if self.half.is_some() {
            let mut s = Schedule::new("refresh f16 weights");
            self.record_refresh_half(&mut s, ctx)?;
            s.run(ctx);
        }
        Ok(())
    }

    /// A fresh model initialised as GPT-2 (N(0, 0.02), residual projections scaled by
    /// 1/sqrt(2L), zero biases, unit layernorm weights) from `seed`.
    pub fn init(ctx: &GpuContext, config: Gpt2Config, seed: u64) -> Result<Self> {
        let values = init_params(&config, seed);
        Self::from_values(ctx, config, &values)
    }

    /// Load a Hugging Face GPT-2: a directory with `config.json` and `model.safetensors`,
    /// or a `.safetensors` file with `config.json` beside it.
    pub fn load(ctx: &GpuContext, path: &Path) -> Result<Self> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join("model.safetensors"))
        } else {
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            (dir, path.to_path_buf())
        };
        let config = Gpt2Config::from_file(&dir.join("config.json"))?;
        let values = load_gpt2_safetensors(&file, &config)?;
        Self::from_values(ctx, config, &values)
    }

    /// Save as a Hugging Face checkpoint directory (`config.json`, `model.safetensors`),
    /// each file written atomically.
    pub async fn save(&self, ctx: &GpuContext, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.display().to_string(),
            source: e,
        })?;
        let values = self.params.read_all(ctx).await?;
        save_gpt2_safetensors(&dir.join("model.safetensors"), &self.config, &values)?;
        let json =
            serde_json::to_string_pretty(&self.config.to_hf_json()).expect("config serializes");
        write_atomic(&dir.join("config.json"), json.as_bytes())
    }

    /// Device limits a run at batch `b` and length `t` needs beyond WebGPU's defaults:
    /// the largest single buffer (the logits or wte), with the logits chunked as
    /// [`ClassifierChunk::Auto`] chunks them (training, evaluation).
    pub fn needs(config: &Gpt2Config, b: usize, t: usize) -> Needs {
        Self::needs_with(config, b, t, ClassifierChunk::Auto)
    }

    /// [`needs`](Self::needs) with the logits as `chunk` makes them: `Whole` for the
    /// forward passes of generation, which read whole logits.
    pub fn needs_with(config: &Gpt2Config, b: usize, t: usize, chunk: ClassifierChunk) -> Needs {
        let c = config.n_embd as u64;
        let v = config.vocab_size;
        let logits_cols = chunk.columns(b * t, v).ok().flatten().unwrap_or(v);
        let biggest = [
            (b * t) as u64 * logits_cols as u64,
            config.vocab_size as u64 * c,
            (b * t) as u64 * config.mlp_width() as u64,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            * 4;
        // Kernels bind the (B·T, 4C) activations and gradients whole (the classifier's
        // weights and logits are split by their launchers).
        let binding = (b * t) as u64 * config.mlp_width() as u64 * 4;
        Needs {
            max_buffer_size: biggest,
            max_storage_buffer_binding_size: binding,
            ..Needs::default()
        }
    }
}

/// One block's activations, for a fixed (B, T).
pub struct LayerActs {
    pub ln1: Tensor,       // (B, T, C)
    pub ln1_mean: Tensor,  // (B, T)
    pub ln1_rstd: Tensor,  // (B, T)
    pub qkv: Tensor,       // (B, T, 3C)
    pub atty: Tensor,      // (B, T, C)
    pub att_stats: Tensor, // (B, NH, T): log-sum-exp of each attention row
    pub attproj: Tensor,   // (B, T, C)
    pub residual2: Tensor, // (B, T, C)
    pub ln2: Tensor,       // (B, T, C)
    pub ln2_mean: Tensor,  // (B, T)
    pub ln2_rstd: Tensor,  // (B, T)
    pub fch: Tensor,       // (B, T, 4C); gelu(fch) is applied by the matmuls reading it
    pub fcproj: Tensor,    // (B, T, C)
    pub residual3: Tensor, // (B, T, C)
}

/// Every activation of a forward pass at (B, T), allocated once.
pub struct Activations {
    pub b: usize,
    pub t: usize,
    pub tokens: Tensor,  // (B, T) i32
    pub targets: Tensor, // (B, T) i32, -100 = not counted
    pub encoded: Tensor, // (B, T, C)
    pub layers: Vec<LayerActs>,
    pub lnf: Tensor,      // (B, T, C)
    pub lnf_mean: Tensor, // (B, T)
    pub lnf_rstd: Tensor, // (B, T)
    /// (B, T, V), or (B, T, Vc) with `classifier`: one chunk of vocabulary columns at a
    /// time, never the whole logits. The backward pass overwrites it with dlogits.
    pub logits: Tensor,
    pub losses: Tensor,     // (B, T)
    pub loss_stats: Tensor, // (4): [mean, count, 1/count, sum]
    /// The classifier fused with the loss over chunks of Vc columns; `None`: whole logits.
    pub classifier: Option<ClassifierChunks>,
    /// The mixed path ([`Activations::add_half`]): each block's f16 copies of its matmul
    /// inputs, which the forward then casts and its matmuls read.
    pub half: Option<Vec<HalfLayerActs>>,
}

fn f32t(ctx: &GpuContext, label: String, shape: &[usize]) -> Result<Tensor> {
    Tensor::zeros(ctx, &label, shape, DType::F32)
}

impl Activations {
    /// Activations with whole logits (B, T, V), which generation and tests of the logits
    /// read.
    pub fn new(
        ctx: &GpuContext,
        cfg: &Gpt2Config,
        b: usize,
        t: usize,
        prefix: &str,
    ) -> Result<Self> {
        Self::with_classifier(ctx, cfg, b, t, prefix, ClassifierChunk::Whole)
    }

    /// Activations whose logits are whole or chunked over the vocabulary as `chunk`
    /// decides for B·T rows. Chunked, the logits are never readable as a whole: the
    /// forward pass folds them into the loss (it then needs the targets in place).
    pub fn with_classifier(
        ctx: &GpuContext,
        cfg: &Gpt2Config,
        b: usize,
        t: usize,
        prefix: &str,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        if t == 0 || b == 0 {
            return Err(Error::Invalid(format!(
                "batch {b} × length {t}: both must be positive"
            )));
        }
        if t > cfg.n_positions {
            return Err(Error::Invalid(format!(
                "sequence length {t} exceeds the model's context of {} positions",
                cfg.n_positions
            )));
        }
        let (c, nh, f) = (cfg.n_embd, cfg.n_head, cfg.mlp_width());
        let vc = chunk.columns(b * t, cfg.vocab_size)?;
        let bt = [b, t];
        let btc = [b, t, c];
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let n = |s: &str| format!("{prefix}h.{l}.{s}");
                Ok(LayerActs {
                    ln1: f32t(ctx, n("ln1"), &btc)?,
                    ln1_mean: f32t(ctx, n("ln1_mean"), &bt)?,
                    ln1_rstd: f32t(ctx, n("ln1_rstd"), &bt)?,
                    qkv: f32t(ctx, n("qkv"), &[b, t, 3 * c])?,
                    atty: f32t(ctx, n("atty"), &btc)?,
                    att_stats: f32t(ctx, n("att_stats"), &[b, nh, t])?,
                    attproj: f32t(ctx, n("attproj"), &btc)?,
                    residual2: f32t(ctx, n("residual2"), &btc)?,
                    ln2: f32t(ctx, n("ln2"), &btc)?,
                    ln2_mean: f32t(ctx, n("ln2_mean"), &bt)?,
                    ln2_rstd: f32t(ctx, n("ln2_rstd"), &bt)?,
                    fch: f32t(ctx, n("fch"), &[b, t, f])?,
                    fcproj: f32t(ctx, n("fcproj"), &btc)?,
                    residual3: f32t(ctx, n("residual3"), &btc)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Activations {
            b,
            t,
            tokens: Tensor::zeros(ctx, &format!("{prefix}tokens"), &bt, DType::I32)?,
            targets: Tensor::zeros(ctx, &format!("{prefix}targets"), &bt, DType::I32)?,
            encoded: f32t(ctx, format!("{prefix}encoded"), &btc)?,
            layers,
            lnf: f32t(ctx, format!("{prefix}lnf"), &btc)?,
            lnf_mean: f32t(ctx, format!("{prefix}lnf_mean"), &bt)?,
            lnf_rstd: f32t(ctx, format!("{prefix}lnf_rstd"), &bt)?,
            logits: f32t(
                ctx,
                format!("{prefix}logits"),
                &[b, t, vc.unwrap_or(cfg.vocab_size)],
            )?,
            losses: f32t(ctx, format!("{prefix}losses"), &bt)?,
            loss_stats: f32t(ctx, format!("{prefix}loss_stats"), &[STATS_LEN])?,
            classifier: vc
                .map(|vc| ClassifierChunks::new(ctx, prefix, b * t, c, vc))
                .transpose()?,
            half: None,
        })
    }

    /// Add the f16 copies of the matmul inputs the mixed path reads (named with the
    /// same `prefix` as the rest); the forward pass then needs a model with f16 weights.
    pub fn add_half(&mut self, ctx: &GpuContext, cfg: &Gpt2Config, prefix: &str) -> Result<()> {
        let dims = (self.b, self.t, cfg.n_embd, cfg.mlp_width());
        let layers = (0..cfg.n_layer)
            .map(|l| HalfLayerActs::new(ctx, prefix, l, dims))
            .collect::<Result<Vec<_>>>()?;
        self.half = Some(layers);
        Ok(())
    }

    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.tokens, &self.targets, &self.encoded];
        for l in &self.layers {
            v.extend([
                &l.ln1,
                &l.ln1_mean,
                &l.ln1_rstd,
                &l.qkv,
                &l.atty,
                &l.att_stats,
                &l.attproj,
                &l.residual2,
                &l.ln2,
                &l.ln2_mean,
                &l.ln2_rstd,
                &l.fch,
                &l.fcproj,
                &l.residual3,
            ]);
        }
        v.extend([
            &self.lnf,
            &self.lnf_mean,
            &self.lnf_rstd,
            &self.logits,
            &self.losses,
            &self.loss_stats,
        ]);
        if let Some(ch) = &self.classifier {
            v.extend(ch.all());
        }
        for h in self.half.iter().flatten() {
            v.extend(h.all());
        }
        v
    }

    /// Check token ids and upload tokens and targets (staged into the next submit).
    pub fn write_batch(
        &self,
        ctx: &GpuContext,
        vocab: usize,
        x: &[i32],
        y: Option<&[i32]>,
    ) -> Result<()> {
        check_batch(vocab, x, y, 1, self.b, self.t)?;
        if let Some(y) = y {
            self.targets.write(ctx, y)?;
        }
        self.tokens.write(ctx, x)
    }
}

/// Error unless `x` (and `y`) hold K·B·T ids, tokens in [0, V), targets in [0, V) or
/// the ignore value -100.
fn check_batch(
    vocab: usize,
    x: &[i32],
    y: Option<&[i32]>,
    k: usize,
    b: usize,
    t: usize,
) -> Result<()> {
    let n = k * b * t;
    if x.len() != n || y.is_some_and(|y| y.len() != n) {
        let shape = if k == 1 {
            format!("B·T = {b}·{t}")
        } else {
            format!("K·B·T = {k}·{b}·{t}")
        };
        return Err(Error::Invalid(format!(
            "a batch needs {shape} = {n} tokens and targets, got {} and {}",
            x.len(),
            y.map_or(0, |y| y.len())
        )));
    }
    let bad = |v: i32| v < 0 || v as usize >= vocab;
    if let Some(&tok) = x.iter().find(|&&v| bad(v)) {
        return Err(Error::Invalid(format!(
            "token id {tok} is outside the vocabulary of {vocab}"
        )));
    }
    if let Some(y) = y {
        if let Some(&tok) = y
            .iter()
            .find(|&&v| bad(v) && v != crate::kernels::crossentropy::IGNORE_INDEX)
        {
            return Err(Error::Invalid(format!(
                "target id {tok} is outside the vocabulary of {vocab} (and is not the ignore value -100)"
            )));
        }
    }
    Ok(())
}

/// The gradients of the activations used only inside one block's backward: one set,
/// shared by every block, zeroed by [`record_backward_with`] before each block.
pub struct BlockGrads {
    pub dln1: Tensor,      // (B, T, C)
    pub dqkv: Tensor,      // (B, T, 3C)
    pub datty: Tensor,     // (B, T, C)
    pub dattproj: Tensor,  // (B, T, C)
    pub dln2: Tensor,      // (B, T, C)
    pub dfch: Tensor,      // (B, T, 4C)
    pub dfch_gelu: Tensor, // (B, T, 4C): the gradient of gelu(fch)
}

/// The gradients that carry the residual stream's gradient from block l + 1's backward
/// into block l's: written while block l + 1 runs, read while block l runs. Two sets,
/// used by blocks of even and of odd index in turn.
pub struct CarryGrads {
    pub dresidual2: Tensor, // (B, T, C)
    pub dfcproj: Tensor,    // (B, T, C)
    pub dresidual3: Tensor, // (B, T, C)
}

/// Block l's view of [`GradActivations`]: the shared [`BlockGrads`] and the
/// [`CarryGrads`] of l's parity.
pub struct LayerGrads<'a> {
    pub dln1: &'a Tensor,       // (B, T, C)
    pub dqkv: &'a Tensor,       // (B, T, 3C)
    pub datty: &'a Tensor,      // (B, T, C)
    pub dattproj: &'a Tensor,   // (B, T, C)
    pub dresidual2: &'a Tensor, // (B, T, C)
    pub dln2: &'a Tensor,       // (B, T, C)
    pub dfch: &'a Tensor,       // (B, T, 4C)
    pub dfch_gelu: &'a Tensor,  // (B, T, 4C)
    pub dfcproj: &'a Tensor,    // (B, T, C)
    pub dresidual3: &'a Tensor, // (B, T, C)
}

/// Gradients of the activations the backward pass needs, for a fixed (B, T).
///
/// Their size does not grow with the number of blocks: the backward runs the blocks one
/// after another, so a block's gradients are one set that every block reuses
/// ([`BlockGrads`]), and only the three that carry the residual's gradient into the block
/// below alternate between two sets ([`CarryGrads`]). GPT-2 124M at B = 4, T = 1024
/// keeps 23 of them the size of a (B, T, C) tensor (289 MB) where a set per block took 218
/// (2.7 GB).
/// The backward ([`record_backward_with`]) zeroes each set before the block that adds
/// into it, so the values left after a pass are those of block 0 (and block 1's carry).
pub struct GradActivations {
    pub dencoded: Tensor, // (B, T, C)
    pub block: BlockGrads,
    /// [even blocks, odd blocks]
    pub carry: [CarryGrads; 2],
    pub dlnf: Tensor, // (B, T, C)
    /// The mixed path ([`GradActivations::add_half`]): the f16 copies of the output
    /// gradients a block's matmuls' backward reads, one set shared by every block (each
    /// is overwritten whole by its cast before it is read).
    pub half: Option<HalfLayerGrads>,
}

impl GradActivations {
    pub fn new(ctx: &GpuContext, cfg: &Gpt2Config, b: usize, t: usize) -> Result<Self> {
        let (c, f) = (cfg.n_embd, cfg.mlp_width());
        let btc = [b, t, c];
        let n = |s: &str| format!("grad.block.{s}");
        let block = BlockGrads {
            dln1: f32t(ctx, n("ln1"), &btc)?,
            dqkv: f32t(ctx, n("qkv"), &[b, t, 3 * c])?,
            datty: f32t(ctx, n("atty"), &btc)?,
            dattproj: f32t(ctx, n("attproj"), &btc)?,
            dln2: f32t(ctx, n("ln2"), &btc)?,
            dfch: f32t(ctx, n("fch"), &[b, t, f])?,
            dfch_gelu: f32t(ctx, n("fch_gelu"), &[b, t, f])?,
        };
        let carry = |parity: &str| {
            let n = |s: &str| format!("grad.block.{parity}.{s}");
            Ok::<_, Error>(CarryGrads {
                dresidual2: f32t(ctx, n("residual2"), &btc)?,
                dfcproj: f32t(ctx, n("fcproj"), &btc)?,
                dresidual3: f32t(ctx, n("residual3"), &btc)?,
            })
        };
        Ok(GradActivations {
            dencoded: f32t(ctx, "grad.encoded".into(), &btc)?,
            block,
            carry: [carry("even")?, carry("odd")?],
            dlnf: f32t(ctx, "grad.lnf".into(), &btc)?,
            half: None,
        })
    }

    /// Block l's gradients.
    pub fn layer(&self, l: usize) -> LayerGrads<'_> {
        let (k, r) = (&self.block, &self.carry[l % 2]);
        LayerGrads {
            dln1: &k.dln1,
            dqkv: &k.dqkv,
            datty: &k.datty,
            dattproj: &k.dattproj,
            dresidual2: &r.dresidual2,
            dln2: &k.dln2,
            dfch: &k.dfch,
            dfch_gelu: &k.dfch_gelu,
            dfcproj: &r.dfcproj,
            dresidual3: &r.dresidual3,
        }
    }

    /// Add the f16 copies of the matmul output gradients the mixed path reads.
    pub fn add_half(
        &mut self,
        ctx: &GpuContext,
        cfg: &Gpt2Config,
        b: usize,
        t: usize,
    ) -> Result<()> {
        let dims = (b, t, cfg.n_embd, cfg.mlp_width());
        self.half = Some(HalfLayerGrads::new(ctx, dims)?);
        Ok(())
    }

    /// Every tensor, each once: [`accumulated`](Self::accumulated) and the f16 copies.
    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = self.accumulated();
        v.extend(self.half.iter().flat_map(|h| h.all()));
        v
    }

    /// The f32 gradients the backward adds into, each once (the f16 copies are
    /// overwritten whole by their casts).
    pub fn accumulated(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.dencoded, &self.dlnf];
        v.extend(self.block.all());
        v.extend(self.carry.iter().flat_map(|r| r.all()));
        v
    }
}

impl BlockGrads {
    pub fn all(&self) -> [&Tensor; 7] {
        [
            &self.dln1,
            &self.dqkv,
            &self.datty,
            &self.dattproj,
            &self.dln2,
            &self.dfch,
            &self.dfch_gelu,
        ]
    }
}

impl CarryGrads {
    pub fn all(&self) -> [&Tensor; 3] {
        [&self.dresidual2, &self.dfcproj, &self.dresidual3]
    }
}

/// Dropout site of the embeddings; layer l's attention output is `1 + 2l`, its MLP
/// output `2 + 2l` (see shaders/dropout.wgsl).
pub const DROPOUT_SITE_EMBEDDINGS: u32 = 0;

fn dropout_site_attn(l: usize) -> u32 {
    1 + 2 * l as u32
}

fn dropout_site_mlp(l: usize) -> u32 {
    2 + 2 * l as u32
}

/// Record the forward pass: tokens → logits (B, T, V), without dropout (evaluation,
/// inference, parity). With a chunked classifier (`a.classifier`) it ends instead in
/// the loss's running row stats, chunk by chunk, and needs the targets in place.
pub fn record_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Gpt2,
    a: &Activations,
) -> Result<()> {
    record_forward_dropout(s, ctx, model, a, None)
}

/// Record the forward pass with optional dropout (training), where nanoGPT applies it:
/// the embeddings' sum, each attention block's output projection and each MLP's output
/// projection. Attention probabilities are not dropped (nanoGPT's `attn_dropout`): the
/// fused attention kernel never materialises them. Dropout works in place on `encoded`,
/// `attproj` and `fcproj`, which then hold the dropped values the residual stream adds;
/// no mask is stored (the backward pass redraws it).
pub fn record_forward_dropout(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Gpt2,
    a: &Activations,
    dropout: Option<&Dropout>,
) -> Result<()> {
    let cfg = &model.config;
    // Matmul weights in the model's precision (f16 copies on the f16 path).
    let p = model.compute_params();
    let (b, t, c, nh, v, f) = (
        a.b,
        a.t,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        cfg.mlp_width(),
    );
    let eps = cfg.layer_norm_epsilon as f32;
    let bt = b * t;
    let half = half_inputs(model, a.half.as_deref(), "forward")?;
    let drop = |s: &mut Schedule, x: &Tensor, site: u32| drop_in_place(s, ctx, dropout, x, site);
    // The layernorm that reads layer l's residual3: layer l+1's ln_1, or ln_f after the
    // last layer (l = None: the embeddings, when there are no layers). Every layernorm
    // but layer 0's ln_1 is fused with the residual add before it.
    let norm_after = |l: Option<usize>| {
        let next = l.map_or(0, |l| l + 1);
        match (a.layers.get(next), p.layers.get(next)) {
            (Some(x), Some(w)) => (&x.ln1, &x.ln1_mean, &x.ln1_rstd, &w.ln_1_w, &w.ln_1_b),
            _ => (&a.lnf, &a.lnf_mean, &a.lnf_rstd, &p.ln_f_w, &p.ln_f_b),
        }
    };
    encoder_forward(s, ctx, &a.encoded, &a.tokens, &p.wte, &p.wpe, b, t, c, v)?;
    drop(s, &a.encoded, DROPOUT_SITE_EMBEDDINGS)?;
    let (out, mean, rstd, ln_w, ln_b) = norm_after(None);
    layernorm_forward(
        s, ctx, out, mean, rstd, &a.encoded, ln_w, ln_b, b, t, c, eps,
    )?;
    for (l, (w, x)) in p.layers.iter().zip(&a.layers).enumerate() {
        let residual = if l == 0 {
            &a.encoded
        } else {
            &a.layers[l - 1].residual3
        };
        // Each matmul reads its input, or on the mixed path that input's f16 copy.
        let hx = half.map(|h| &h[l]);
        let ln1 = matmul_input(s, ctx, &x.ln1, hx.map(|h| &h.ln1))?;
        matmul_forward(
            s,
            ctx,
            &x.qkv,
            ln1,
            &w.c_attn_w,
            Some(&w.c_attn_b),
            bt,
            c,
            3 * c,
        )?;
        attention_forward(s, ctx, &x.atty, &x.att_stats, &x.qkv, b, t, c, nh)?;
        let atty = matmul_input(s, ctx, &x.atty, hx.map(|h| &h.atty))?;
        matmul_forward(
            s,
            ctx,
            &x.attproj,
            atty,
            &w.c_proj_w,
            Some(&w.c_proj_b),
            bt,
            c,
            c,
        )?;
        drop(s, &x.attproj, dropout_site_attn(l))?;
        residual_layernorm_forward(
            s,
            ctx,
            &x.residual2,
            &x.ln2,
            &x.ln2_mean,
            &x.ln2_rstd,
            residual,
            &x.attproj,
            &w.ln_2_w,
            &w.ln_2_b,
            b,
            t,
            c,
            eps,
        )?;
        let ln2 = matmul_input(s, ctx, &x.ln2, hx.map(|h| &h.ln2))?;
        matmul_forward(s, ctx, &x.fch, ln2, &w.c_fc_w, Some(&w.c_fc_b), bt, c, f)?;
        // fcproj = gelu(fch) · W_proj + b: the GELU applied as fch is loaded.
        let fch = matmul_input(s, ctx, &x.fch, hx.map(|h| &h.fch))?;
        matmul_forward_gelu_in(
            s,
            ctx,
            &x.fcproj,
            fch,
            &w.mlp_proj_w,
            Some(&w.mlp_proj_b),
            bt,
            f,
            c,
        )?;
        drop(s, &x.fcproj, dropout_site_mlp(l))?;
        let (out, mean, rstd, ln_w, ln_b) = norm_after(Some(l));
        residual_layernorm_forward(
            s,
            ctx,
            &x.residual3,
            out,
            mean,
            rstd,
            &x.residual2,
            &x.fcproj,
            ln_w,
            ln_b,
            b,
            t,
            c,
            eps,
        )?;
    }
    match &a.classifier {
        None => classifier_forward(s, ctx, &a.logits, &a.lnf, model.head(), bt, c, v),
        Some(ch) => classifier_crossentropy_forward(
            s, ctx, ch, &a.logits, &a.lnf, &p.wte, None, &a.targets, bt, c, v,
        ),
    }
}

/// The f16 copies of the matmul inputs a pass of `model` reads: those of `half` (the
/// mixed path), which need the model's f16 weights; `None` without them.
fn half_inputs<'a>(
    model: &Gpt2,
    half: Option<&'a [HalfLayerActs]>,
    pass: &str,
) -> Result<Option<&'a [HalfLayerActs]>> {
    if half.is_some() && model.half.is_none() {
        return Err(Error::Invalid(format!(
            "{pass}: the activations hold f16 copies of the matmul inputs (the mixed path), \
             but the model has no f16 weights; make it with_precision(Precision::Mixed)"
        )));
    }
    Ok(half)
}

/// Record the loss: per-position cross-entropy and its mean over counted positions,
/// from the logits or, chunked, from the row stats the forward left.
pub fn record_loss(
    s: &mut Schedule,
    ctx: &GpuContext,
    cfg: &Gpt2Config,
    a: &Activations,
) -> Result<()> {
    let (bt, v) = (a.b * a.t, cfg.vocab_size);
    if let Some(ch) = &a.classifier {
        return classifier_crossentropy_loss(
            s,
            ctx,
            &a.losses,
            &a.loss_stats,
            ch,
            &a.targets,
            bt,
            v,
        );
    }
    crossentropy_forward(s, ctx, &a.losses, &a.logits, &a.targets, bt, v)?;
    crossentropy_mean(s, ctx, &a.loss_stats, &a.losses, &a.targets, bt)
}

/// Record the backward pass, the forward in reverse. Adds into `grads`, which the
/// caller zeroes first; zeroes each of `d`'s sets itself before the blocks that add into
/// it (they are shared between blocks, see [`GradActivations`]); overwrites the logits
/// with dlogits (chunked: recomputes each chunk of logits, then overwrites it).
pub fn record_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Gpt2,
    grads: &ParamTensors,
    a: &Activations,
    d: &GradActivations,
) -> Result<()> {
    record_backward_with(s, ctx, model, grads, a, d, None, 1.0)
}

/// [`record_backward`] of a forward recorded with `dropout` (the same one), for a loss
/// weighted by `grad_scale` (1/K when K micro-batches accumulate into `grads`).
#[allow(clippy::too_many_arguments)]
pub fn record_backward_with(
    s: &mut Schedule,
    ctx: &GpuContext,
    model: &Gpt2,
    grads: &ParamTensors,
    a: &Activations,
    d: &GradActivations,
    dropout: Option<&Dropout>,
    grad_scale: f32,
) -> Result<()> {
    let cfg = &model.config;
    // Matmul weights in the model's precision (f16 copies on the f16 path).
    let p = model.compute_params();
    let (b, t, c, nh, v, f) = (
        a.b,
        a.t,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        cfg.mlp_width(),
    );
    let bt = b * t;
    let half = half_inputs(model, a.half.as_deref(), "backward")?;
    let half_grads = match (half, d.half.as_ref()) {
        (None, _) => None,
        (Some(_), Some(hd)) => Some(hd),
        (Some(_), None) => {
            return Err(Error::Invalid(
                "the mixed path's backward needs gradient activations with f16 copies \
                 (GradActivations::add_half)"
                    .into(),
            ))
        }
    };
    // Each block matmul's dbias is summed from the f32 dout by its own launch
    // (`matmul_backward_bias`), after the matmul's two products, which read dout or, on
    // the mixed path, its f16 copy.
    let undrop =
        |s: &mut Schedule, dx: &Tensor, site: u32| undrop_in_place(s, ctx, dropout, dx, site);
    // Every gradient activation starts at zero; the sets shared between blocks are
    // zeroed again in the loop below, before each block that reuses them.
    for g in d.accumulated() {
        s.clear(g);
    }
    match &a.classifier {
        None => {
            crossentropy_backward_inplace(
                s,
                ctx,
                &a.logits,
                &a.targets,
                &a.loss_stats,
                bt,
                v,
                grad_scale,
            )?;
            let dlogits = &a.logits;
            classifier_backward(
                s,
                ctx,
                &d.dlnf,
                &grads.wte,
                dlogits,
                &a.lnf,
                model.head(),
                bt,
                c,
                v,
            )?;
        }
        Some(ch) => classifier_crossentropy_backward(
            s,
            ctx,
            &d.dlnf,
            &grads.wte,
            ch,
            &a.logits,
            &a.lnf,
            &p.wte,
            None,
            &a.targets,
            &a.loss_stats,
            bt,
            c,
            v,
            grad_scale,
        )?,
    }
    // The backward of a layernorm reading layer l's residual3 (ln_f or layer l+1's
    // ln_1) from dout, fused with that residual add's backward; with l = None, of one
    // reading the embeddings (ln_f with no layers, or layer 0's ln_1).
    let norm_backward = |s: &mut Schedule,
                         l: Option<usize>,
                         (dweight, dbias): (&Tensor, &Tensor),
                         dout: &Tensor,
                         weight: &Tensor,
                         (mean, rstd): (&Tensor, &Tensor)| match l {
        Some(l) => {
            let (x, dx) = (&a.layers[l], d.layer(l));
            residual_layernorm_backward(
                s,
                ctx,
                dx.dresidual2,
                dx.dfcproj,
                dx.dresidual3,
                dweight,
                dbias,
                dout,
                &x.residual3,
                weight,
                mean,
                rstd,
                b,
                t,
                c,
            )
        }
        None => layernorm_backward(
            s,
            ctx,
            &d.dencoded,
            dweight,
            dbias,
            dout,
            &a.encoded,
            weight,
            mean,
            rstd,
            b,
            t,
            c,
        ),
    };
    norm_backward(
        s,
        cfg.n_layer.checked_sub(1),
        (&grads.ln_f_w, &grads.ln_f_b),
        &d.dlnf,
        &p.ln_f_w,
        (&a.lnf_mean, &a.lnf_rstd),
    )?;
    for l in (0..cfg.n_layer).rev() {
        let (w, g, x, dx) = (&p.layers[l], &grads.layers[l], &a.layers[l], d.layer(l));
        // Block l + 1 has finished with the shared set, and with the carry set of l's
        // other parity, which block l fills for block l − 1 (block l + 1 read it).
        if l + 1 < cfg.n_layer {
            for t in d.block.all() {
                s.clear(t);
            }
            if l > 0 {
                for t in d.carry[(l - 1) % 2].all() {
                    s.clear(t);
                }
            }
        }
        let dresidual = if l == 0 {
            &d.dencoded
        } else {
            d.layer(l - 1).dresidual3
        };
        undrop(s, dx.dfcproj, dropout_site_mlp(l))?;
        // The matmuls' inputs as the forward read them (f16 copies on the mixed path),
        // and their output gradients likewise.
        let (hx, hd) = (half.map(|h| &h[l]), half_grads);
        let dfcproj = matmul_input(s, ctx, dx.dfcproj, hd.map(|h| &h.dfcproj))?;
        // dW_proj += gelu(fch)ᵀ · dfcproj, the GELU recomputed as fch is loaded.
        matmul_backward_gelu_in(
            s,
            ctx,
            dx.dfch_gelu,
            &g.mlp_proj_w,
            None,
            dfcproj,
            hx.map_or(&x.fch, |h| &h.fch),
            &w.mlp_proj_w,
            bt,
            f,
            c,
        )?;
        matmul_backward_bias(s, ctx, &g.mlp_proj_b, dx.dfcproj, bt, c)?;
        gelu_backward(s, ctx, dx.dfch, &x.fch, dx.dfch_gelu, bt * f)?;
        let dfch = matmul_input(s, ctx, dx.dfch, hd.map(|h| &h.dfch))?;
        matmul_backward(
            s,
            ctx,
            dx.dln2,
            &g.c_fc_w,
            None,
            dfch,
            hx.map_or(&x.ln2, |h| &h.ln2),
            &w.c_fc_w,
            bt,
            c,
            f,
        )?;
        matmul_backward_bias(s, ctx, &g.c_fc_b, dx.dfch, bt, f)?;
        residual_layernorm_backward(
            s,
            ctx,
            dresidual,
            dx.dattproj,
            dx.dresidual2,
            &g.ln_2_w,
            &g.ln_2_b,
            dx.dln2,
            &x.residual2,
            &w.ln_2_w,
            &x.ln2_mean,
            &x.ln2_rstd,
            b,
            t,
            c,
        )?;
        undrop(s, dx.dattproj, dropout_site_attn(l))?;
        let dattproj = matmul_input(s, ctx, dx.dattproj, hd.map(|h| &h.dattproj))?;
        matmul_backward(
            s,
            ctx,
            dx.datty,
            &g.c_proj_w,
            None,
            dattproj,
            hx.map_or(&x.atty, |h| &h.atty),
            &w.c_proj_w,
            bt,
            c,
            c,
        )?;
        matmul_backward_bias(s, ctx, &g.c_proj_b, dx.dattproj, bt, c)?;
        attention_backward(
            s,
            ctx,
            dx.dqkv,
            dx.datty,
            &x.qkv,
            &x.atty,
            &x.att_stats,
            b,
            t,
            c,
            nh,
        )?;
        let dqkv = matmul_input(s, ctx, dx.dqkv, hd.map(|h| &h.dqkv))?;
        matmul_backward(
            s,
            ctx,
            dx.dln1,
            &g.c_attn_w,
            None,
            dqkv,
            hx.map_or(&x.ln1, |h| &h.ln1),
            &w.c_attn_w,
            bt,
            c,
            3 * c,
        )?;
        matmul_backward_bias(s, ctx, &g.c_attn_b, dx.dqkv, bt, 3 * c)?;
        norm_backward(
            s,
            l.checked_sub(1),
            (&g.ln_1_w, &g.ln_1_b),
            dx.dln1,
            &w.ln_1_w,
            (&x.ln1_mean, &x.ln1_rstd),
        )?;
    }
    undrop(s, &d.dencoded, DROPOUT_SITE_EMBEDDINGS)?;
    encoder_backward(
        s,
        ctx,
        &grads.wte,
        &grads.wpe,
        &d.dencoded,
        &a.tokens,
        b,
        t,
        c,
        v,
    )
}

/// AdamW settings (as `torch.optim.AdamW`), with optional global-norm clipping.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to the decayed group (matrices and embeddings); biases and layernorm
    /// parameters are never decayed.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this; `None` disables clipping.
    pub grad_clip: Option<f32>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
        }
    }
}

/// Bytes a training run holds on the device, by kind (printed before training).
#[derive(Clone, Debug)]
pub struct MemoryReport {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub largest_binding: (String, u64),
    pub binding_limit: u64,
}

impl MemoryReport {
    /// A trainer's bytes: `params` (weights and constants), `grads`, `moments` (AdamW's
    /// m and v), and `acts` (activations, their gradients, step inputs and scratch); the
    /// largest binding is the largest of `params` and `acts`.
    pub fn of(
        ctx: &GpuContext,
        params: &[&Tensor],
        grads: &[&Tensor],
        moments: &[&Tensor],
        acts: &[&Tensor],
    ) -> Self {
        let sum = |v: &[&Tensor]| v.iter().map(|t| t.size_bytes()).sum::<u64>();
        let largest = params
            .iter()
            .chain(acts)
            .max_by_key(|t| t.size_bytes())
            .expect("a trainer holds tensors");
        MemoryReport {
            parameters: sum(params),
            gradients: sum(grads),
            optimizer: sum(moments),
            activations: sum(acts),
            largest_binding: (largest.label.clone(), largest.size_bytes()),
            binding_limit: ctx.binding_limit(),
        }
    }
}

impl std::fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(f, "memory: parameters {:.1} MiB, gradients {:.1} MiB, optimizer state {:.1} MiB, activations {:.1} MiB (total {:.1} MiB)",
            mib(self.parameters), mib(self.gradients), mib(self.optimizer), mib(self.activations),
            mib(self.parameters + self.gradients + self.optimizer + self.activations))?;
        let (name, bytes) = &self.largest_binding;
        write!(
            f,
            "largest tensor: {name} {:.1} MiB; binding limit {:.1} MiB ({})",
            mib(*bytes),
            mib(self.binding_limit),
            if *bytes > self.binding_limit {
                "bound in chunks"
            } else {
                "bound whole"
            }
        )
    }
}

/// How a training step runs beyond AdamW: gradient accumulation and dropout (for GPT-2's
/// [`Trainer`], and BERT's and the encoder–decoder's `with_config`).
/// `StepConfig::default()` (one micro-batch, no dropout) records exactly the step the
/// parity test checks against PyTorch.
#[derive(Clone, Debug, PartialEq)]
pub struct StepConfig {
    /// K: micro-batches of (B, T) whose gradients one optimizer step accumulates. Each
    /// micro-batch's mean loss weighs 1/K (nanoGPT's `loss / gradient_accumulation_steps`).
    pub grad_accum: usize,
    /// Dropout rate during training (0 = off; never applied at evaluation).
    pub dropout: f32,
    /// Seed of the dropout masks; with the step number it fixes every mask.
    pub seed: u64,
    /// Whole logits or the classifier fused with the loss over vocabulary chunks
    /// (smaller, one more classifier matmul); `Auto` chunks only logits over 64 MiB.
    pub classifier_chunk: ClassifierChunk,
    /// The loss scaler's rule on the mixed path (unused otherwise).
    pub loss_scale: LossScaleConfig,
}

impl Default for StepConfig {
    fn default() -> Self {
        StepConfig {
            grad_accum: 1,
            dropout: 0.0,
            seed: 0,
            classifier_chunk: ClassifierChunk::Auto,
            loss_scale: LossScaleConfig::default(),
        }
    }
}

/// Everything a training run keeps on the device for one (B, T), and the recorded step.
///
/// A step is ONE submit, whatever K: the K micro-batches' tokens are uploaded together
/// into `micro_tokens`/`micro_targets` (K, B, T); the encoder then replays, for each
/// micro-batch k, buffer copies of slice k into the activations' tokens and targets (and
/// of row k of the dropout table into the live dropout step), the recorded
/// forward+loss+backward, and a copy of its loss stats into row k of `micro_stats`;
/// then clip + AdamW once. Only `micro_stats` (K·4 floats) is read back.
pub struct Trainer {
    pub model: Gpt2,
    pub acts: Activations,
    pub dacts: GradActivations,
    pub grads: ParamTensors,
    pub m: ParamTensors,
    pub v: ParamTensors,
    pub gradnorm: GradNorm,
    /// The mixed path's dynamic loss scaling: `grads` then hold S·∇ (S in its state).
    pub scaler: Option<LossScaler>,
    pub opt: OptimConfig,
    pub step_config: StepConfig,
    micro_tokens: Tensor,  // (K, B, T) i32: this step's micro-batches
    micro_targets: Tensor, // (K, B, T) i32
    dropout: StepDropout,
    /// forward (no dropout), zero grads, the micro-batch (dropout, 1/K), its exact twin,
    /// clip + AdamW; replayed by `model::step`
    replay: StepReplay,
    /// Steps taken, skipped ones included (they count for dropout's masks and a run's
    /// progress).
    pub step: u32,
    /// Of those, the mixed path's steps skipped for an f16 overflow, as the last step
    /// read back: they changed no weight, and as in torch (GradScaler skips
    /// `optimizer.step()`) AdamW does not count them, so the next step's t is
    /// step − skipped + 1.
    pub skipped: u32,
}

impl Trainer {
    /// A trainer with one micro-batch per step and no dropout.
    pub fn new(
        ctx: &GpuContext,
        model: Gpt2,
        b: usize,
        t: usize,
        opt: OptimConfig,
    ) -> Result<Self> {
        Self::with_config(ctx, model, b, t, opt, StepConfig::default())
    }

    /// A trainer for micro-batches of (B, T), with accumulation and dropout as `config`.
    pub fn with_config(
        ctx: &GpuContext,
        model: Gpt2,
        b: usize,
        t: usize,
        opt: OptimConfig,
        config: StepConfig,
    ) -> Result<Self> {
        let k = config.grad_accum;
        if k == 0 {
            return Err(Error::Invalid(
                "gradient accumulation needs at least one micro-batch per step".into(),
            ));
        }
        let cfg = model.config.clone();
        let mut acts =
            Activations::with_classifier(ctx, &cfg, b, t, "act.", config.classifier_chunk)?;
        let mut dacts = GradActivations::new(ctx, &cfg, b, t)?;
        let scaler = if model.precision() == Precision::Mixed {
            acts.add_half(ctx, &cfg, "act.")?;
            dacts.add_half(ctx, &cfg, b, t)?;
            Some(LossScaler::new(ctx, config.loss_scale)?)
        } else {
            None
        };
        let grads = ParamTensors::new(ctx, &cfg, "grad", None)?;
        let m = ParamTensors::new(ctx, &cfg, "adam.m", None)?;
        let v = ParamTensors::new(ctx, &cfg, "adam.v", None)?;
        let gradnorm = GradNorm::new(ctx, &grads.all())?;
        let adam_step = AdamwStep::tensor(ctx, "adamw step")?;
        let micro_tokens = Tensor::zeros(ctx, "micro tokens", &[k, b, t], DType::I32)?;
        let micro_targets = Tensor::zeros(ctx, "micro targets", &[k, b, t], DType::I32)?;
        let dropout = StepDropout::new(ctx, k, config.dropout, config.seed)?;

        let mut forward = Schedule::new("forward");
        record_forward(&mut forward, ctx, &model, &acts)?;
        record_loss(&mut forward, ctx, &cfg, &acts)?;

        let mut zero_grads = Schedule::new("zero grads");
        for g in grads.all() {
            zero_grads.clear(g);
        }
        let record_micro = |label: &str, dropout: Option<&Dropout>, scale: f32| {
            let mut s = Schedule::new(label);
            // (The backward zeroes the gradient activations itself.)
            record_forward_dropout(&mut s, ctx, &model, &acts, dropout)?;
            record_loss(&mut s, ctx, &cfg, &acts)?;
            // The mixed path's gradients carry the loss scale from dlogits on.
            if let Some(sc) = &scaler {
                loss_scale_apply(&mut s, ctx, &acts.loss_stats, &sc.state)?;
            }
            record_backward_with(&mut s, ctx, &model, &grads, &acts, &dacts, dropout, scale)?;
            Ok::<_, Error>(s)
        };
        let recorded = dropout.recorded();
        let micro = record_micro("micro-batch", recorded.as_ref(), 1.0 / k as f32)?;
        let exact = if recorded.is_some() || k > 1 {
            Some(record_micro("forward+backward", None, 1.0)?)
        } else {
            None
        };

        let decay = gpt2_param_specs(&cfg).into_iter().map(|p| p.decay);
        let slots = slots(model.params.all(), grads.all(), m.all(), v.all(), decay);
        let mut update = record_update(ctx, &opt, &gradnorm, &adam_step, &slots, scaler.as_ref())?;
        // The f16 copies follow each update, inside the step's one submit.
        model.record_refresh_half(&mut update, ctx)?;
        let recorded = Recorded {
            forward,
            zero_grads,
            micro,
            exact,
            update,
        };
        let mut replay = StepReplay::new(ctx, k, recorded, adam_step, &acts.loss_stats)?;
        if let Some(sc) = &scaler {
            replay = replay.with_tail(ctx, &sc.state);
        }
        Ok(Trainer {
            model,
            acts,
            dacts,
            grads,
            m,
            v,
            gradnorm,
            scaler,
            opt,
            step_config: config,
            micro_tokens,
            micro_targets,
            dropout,
            replay,
            step: 0,
            skipped: 0,
        })
    }

    /// (B, T) of one micro-batch.
    pub fn micro_batch(&self) -> (usize, usize) {
        (self.acts.b, self.acts.t)
    }

    /// Tokens one optimizer step consumes: K·B·T.
    pub fn tokens_per_step(&self) -> usize {
        self.step_config.grad_accum * self.acts.b * self.acts.t
    }

    pub fn memory(&self, ctx: &GpuContext) -> MemoryReport {
        let moments: Vec<&Tensor> = self.m.all().into_iter().chain(self.v.all()).collect();
        let mut acts = self.acts.all();
        acts.extend(self.dacts.all());
        acts.extend([&self.micro_tokens, &self.micro_targets]);
        acts.extend(self.dropout.tensors());
        let mut report = MemoryReport::of(
            ctx,
            &self.model.params.all(),
            &self.grads.all(),
            &moments,
            &acts,
        );
        report.activations += self.replay.bytes();
        report
    }

    /// Mean loss of (x, y) without touching gradients or weights, without dropout.
    /// One submit.
    pub async fn eval_loss(&self, ctx: &GpuContext, x: &[i32], y: &[i32]) -> Result<f32> {
        self.acts
            .write_batch(ctx, self.model.config.vocab_size, x, Some(y))?;
        self.replay.eval(ctx).await
    }

    /// Forward and backward of one micro-batch (x, y) (B·T each), without dropout or
    /// accumulation scaling: the gradient of its mean loss lands in `self.grads` (times
    /// the loss scale on the mixed path; [`gradients`](Self::gradients) unscales);
    /// returns the loss. The logits are overwritten by their gradient. One submit.
    pub async fn forward_backward(&self, ctx: &GpuContext, x: &[i32], y: &[i32]) -> Result<f32> {
        self.acts
            .write_batch(ctx, self.model.config.vocab_size, x, Some(y))?;
        self.replay.forward_backward(ctx).await
    }

    /// Every parameter's gradient (in `gpt2_param_specs` order) as the last backward left
    /// it, divided by the loss scale on the mixed path (the scale that backward used, as
    /// long as no step has run since).
    pub async fn gradients(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        let mut grads = self.grads.read_all(ctx).await?;
        if let Some(sc) = &self.scaler {
            let inv = 1.0 / sc.read(ctx).await?.scale;
            for g in grads.iter_mut().flatten() {
                *g *= inv;
            }
        }
        Ok(grads)
    }

    /// AdamW's t for the next step: steps taken less those the loss scaler skipped, + 1.
    pub fn adamw_t(&self) -> u32 {
        self.step - self.skipped + 1
    }

    /// Set the loss scaler's state (on the mixed path; resuming a run), and with it the
    /// count of skipped steps AdamW's t leaves out.
    pub fn set_loss_scale(&mut self, ctx: &GpuContext, st: &LossScaleState) -> Result<()> {
        if let Some(sc) = &self.scaler {
            sc.write(ctx, st)?;
            self.skipped = st.skipped;
        }
        Ok(())
    }

    /// The loss scaler's state on the mixed path (`None` otherwise): a readback.
    pub async fn loss_scale(&self, ctx: &GpuContext) -> Result<Option<LossScaleState>> {
        match &self.scaler {
            Some(sc) => Ok(Some(sc.read(ctx).await?)),
            None => Ok(None),
        }
    }

    /// One training step at learning rate `lr` on K micro-batches (x, y: K·B·T ids each,
    /// micro-batch k at [k·B·T, (k+1)·B·T)): zero grads → K × (forward → loss → backward)
    /// → clip → AdamW, as one submit; only the K losses (before the update) are read
    /// back. Returns their mean (the loss itself when K = 1).
    pub async fn step(&mut self, ctx: &GpuContext, x: &[i32], y: &[i32], lr: f32) -> Result<f32> {
        let losses = self.step_losses(ctx, x, y, lr).await?;
        Ok(mean_loss(&losses))
    }

    /// [`step`](Self::step), returning each micro-batch's mean loss.
    pub async fn step_losses(
        &mut self,
        ctx: &GpuContext,
        x: &[i32],
        y: &[i32],
        lr: f32,
    ) -> Result<Vec<f32>> {
        let (k, b, t) = (self.step_config.grad_accum, self.acts.b, self.acts.t);
        check_batch(self.model.config.vocab_size, x, Some(y), k, b, t)?;
        self.micro_tokens.write(ctx, x)?;
        self.micro_targets.write(ctx, y)?;
        let row = (b * t * 4) as u64;
        let mut copies = vec![
            MicroCopy {
                from: &self.micro_tokens,
                to: &self.acts.tokens,
                bytes: row,
            },
            MicroCopy {
                from: &self.micro_targets,
                to: &self.acts.targets,
                bytes: row,
            },
        ];
        copies.extend(self.dropout.prepare(ctx, self.step, k)?);
        let t = self.adamw_t();
        let out = self.replay.step(ctx, &self.opt, lr, t, &copies).await?;
        self.step += 1;
        // The scaler's state as the step left it: [scale, good steps, last skipped,
        // steps skipped] (shaders/lossscale.wgsl).
        if let Some(&skipped) = out.tail.get(3) {
            self.skipped = skipped as u32;
        }
        Ok(out.losses)
    }
}

/// Greedy continuation of `prompt` up to `total` tokens (prompt included) by full
/// recomputation: a forward pass at B = 1, T = context over the prompt padded with
/// token 0 (causal attention keeps the padding from affecting earlier positions), then
/// argmax of the last real position on the GPU; only the chosen id is read back.
pub async fn generate_greedy(
    ctx: &GpuContext,
    model: &Gpt2,
    prompt: &[i32],
    total: usize,
) -> Result<Vec<i32>> {
    let cfg = &model.config;
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt needs at least one token".into()));
    }
    if total > cfg.n_positions {
        return Err(Error::Invalid(format!(
            "{total} tokens exceed the model's context of {} positions",
            cfg.n_positions
        )));
    }
    let t = cfg.n_positions;
    let v = cfg.vocab_size;
    let acts = Activations::new(ctx, cfg, 1, t, "gen.")?;
    let mut fwd = Schedule::new("generate forward");
    record_forward(&mut fwd, ctx, model, &acts)?;
    let last = Tensor::zeros(ctx, "last logits", &[1, v], DType::F32)?;
    let next = Tensor::zeros(ctx, "next token", &[1], DType::U32)?;
    let mut pick = Schedule::new("argmax");
    argmax_forward(&mut pick, ctx, &next, &last, 1, v)?;
    let readback = Readback::new(ctx, "next token", 4);
    let mut tokens = prompt.to_vec();
    while tokens.len() < total {
        let mut padded = tokens.clone();
        padded.resize(t, 0);
        acts.write_batch(ctx, v, &padded, None)?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("generate"),
            });
        fwd.encode(&mut enc);
        let row = ((tokens.len() - 1) * v * 4) as u64;
        enc.copy_buffer_to_buffer(&acts.logits.buffer, row, &last.buffer, 0, (v * 4) as u64);
        pick.encode(&mut enc);
        enc.copy_buffer_to_buffer(&next.buffer, 0, &readback.buffer, 0, 4);
        ctx.submit(enc.finish());
        let id: Vec<u32> = readback.read(ctx).await?;
        tokens.push(id[0] as i32);
    }
    Ok(tokens)
}
