//! The f16 path of a GPT-2 (`--precision f16`): f16 copies of the matrices its matmuls
//! read as `w` (each block's four weight matrices, and wte as the tied classifier), kept
//! beside the f32 master weights, which stay the only weights the optimizer, the
//! embedding, the layernorms and checkpoints see. The matmul kernels widen each f16
//! value to f32 as they load it and accumulate in f32, so the path halves the bytes of
//! weights read per pass (what bounds decoding on a GPU) at the cost of rounding the
//! weights to f16's 11 significant bits. Gradients and activations stay f32, so training
//! needs no loss scaling in this scheme. The copies are refreshed from the master
//! weights by [`HalfWeights::record_refresh`]: once when made, and after every optimizer
//! update inside the training step's submit.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Schedule, Tensor};
use crate::kernels::cast::cast_f32_to_f16;
use crate::model::tensors::{LayerTensors, ParamTensors};

/// The precision weights are read in by the matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32: the default and the reference.
    #[default]
    F32,
    /// Matmul weights read from f16 copies (needs `shader-f16`).
    F16,
    /// Mixed precision for training (needs `shader-f16`): every matmul of the transformer
    /// blocks reads both operands in f16 (the weights' f16 copies, and f16 copies of the
    /// activations and output gradients it multiplies), accumulating in f32, with f32
    /// master weights and dynamic loss scaling (`kernels::lossscale`). Layernorms,
    /// attention, GELU, the loss and the classifier stay f32 (the classifier reads f16
    /// weights, as in `F16`). Inference reads weights as `F16` does.
    Mixed,
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "mixed" => Ok(Precision::Mixed),
            _ => Err(Error::Invalid(format!(
                "unknown precision {s:?}: expected f32, f16 or mixed"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Mixed => "mixed",
        })
    }
}

/// One block's f16 matrices (Conv1D layout, as the f32 ones).
#[derive(Clone)]
pub struct HalfLayer {
    pub c_attn_w: Tensor,   // (C, 3C) f16
    pub c_proj_w: Tensor,   // (C, C) f16
    pub c_fc_w: Tensor,     // (C, 4C) f16
    pub mlp_proj_w: Tensor, // (4C, C) f16
}

/// The f16 copies of a GPT-2's matmul weights. A clone shares the device buffers.
#[derive(Clone)]
pub struct HalfWeights {
    pub wte: Tensor,            // (V, C) f16: the tied classifier
    pub layers: Vec<HalfLayer>, // L blocks
}

fn half_like(ctx: &GpuContext, t: &Tensor) -> Result<Tensor> {
    let label = format!("{} (f16)", t.label);
    Tensor::zeros(ctx, &label, &t.shape, DType::F16)
}

impl HalfWeights {
    /// Allocate the copies of `params`' matrices (not yet filled: record a refresh).
    pub fn new(ctx: &GpuContext, params: &ParamTensors) -> Result<Self> {
        if !ctx.has_f16() {
            return Err(Error::Invalid(format!(
                "--precision f16 needs shader-f16, which the adapter {} lacks; use \
                 --precision f32",
                ctx.adapter_name()
            )));
        }
        let layers = params
            .layers
            .iter()
            .map(|l| {
                Ok(HalfLayer {
                    c_attn_w: half_like(ctx, &l.c_attn_w)?,
                    c_proj_w: half_like(ctx, &l.c_proj_w)?,
                    c_fc_w: half_like(ctx, &l.c_fc_w)?,
                    mlp_proj_w: half_like(ctx, &l.mlp_proj_w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HalfWeights {
            wte: half_like(ctx, &params.wte)?,
            layers,
        })
    }

    /// Pairs of (f16 copy, f32 master), wte first, then each block's four matrices.
    fn pairs<'a>(&'a self, params: &'a ParamTensors) -> Vec<(&'a Tensor, &'a Tensor)> {
        let mut v = vec![(&self.wte, &params.wte)];
        for (h, l) in self.layers.iter().zip(&params.layers) {
            v.push((&h.c_attn_w, &l.c_attn_w));
            v.push((&h.c_proj_w, &l.c_proj_w));
            v.push((&h.c_fc_w, &l.c_fc_w));
            v.push((&h.mlp_proj_w, &l.mlp_proj_w));
        }
        v
    }

    /// Record the copies' refresh from the master weights: one cast per matrix.
    pub fn record_refresh(
        &self,
        s: &mut Schedule,
        ctx: &GpuContext,
        params: &ParamTensors,
    ) -> Result<()> {
        for (h, m) in self.pairs(params) {
            cast_f32_to_f16(s, ctx, h, m, m.numel())?;
        }
        Ok(())
    }

    /// `params` with each block's four matrices replaced by their f16 copies: what the
    /// forward and backward passes read their matmul weights from. wte stays the f32
    /// master (the embedding reads it); the classifier takes [`HalfWeights::wte`].
    pub fn compute_view(&self, params: &ParamTensors) -> ParamTensors {
        let layers = params
            .layers
            .iter()
            .zip(&self.layers)
            .map(|(l, h)| LayerTensors {
                c_attn_w: h.c_attn_w.clone(),
                c_proj_w: h.c_proj_w.clone(),
                c_fc_w: h.c_fc_w.clone(),
                mlp_proj_w: h.mlp_proj_w.clone(),
                ..l.clone()
            })
            .collect();
        ParamTensors {
            layers,
            ..params.clone()
        }
    }
}

/// One block's f16 copies of the activations its matmuls read (the mixed path), each
/// cast from its f32 original right after that is written.
#[derive(Clone)]
pub struct HalfLayerActs {
    pub ln1: Tensor,  // (B, T, C) f16: c_attn's input
    pub atty: Tensor, // (B, T, C) f16: c_proj's input
    pub ln2: Tensor,  // (B, T, C) f16: c_fc's input
    pub fch: Tensor,  // (B, T, 4C) f16: the MLP projection's input (before its GELU)
}

/// The f16 copies of the output gradients a block's matmuls' backward reads: one set,
/// which every block reuses (`GradActivations` in src/model/gpt2.rs).
#[derive(Clone)]
pub struct HalfLayerGrads {
    pub dqkv: Tensor,     // (B, T, 3C) f16
    pub dattproj: Tensor, // (B, T, C) f16
    pub dfch: Tensor,     // (B, T, 4C) f16
    pub dfcproj: Tensor,  // (B, T, C) f16
}

fn f16t(ctx: &GpuContext, label: String, shape: &[usize]) -> Result<Tensor> {
    Tensor::zeros(ctx, &label, shape, DType::F16)
}

impl HalfLayerActs {
    /// Layer `l`'s copies for (B, T), width C and MLP width F.
    pub fn new(ctx: &GpuContext, prefix: &str, l: usize, (b, t, c, f): Dims) -> Result<Self> {
        let n = |s: &str| format!("{prefix}h.{l}.{s} (f16)");
        Ok(HalfLayerActs {
            ln1: f16t(ctx, n("ln1"), &[b, t, c])?,
            atty: f16t(ctx, n("atty"), &[b, t, c])?,
            ln2: f16t(ctx, n("ln2"), &[b, t, c])?,
            fch: f16t(ctx, n("fch"), &[b, t, f])?,
        })
    }

    pub fn all(&self) -> [&Tensor; 4] {
        [&self.ln1, &self.atty, &self.ln2, &self.fch]
    }
}

impl HalfLayerGrads {
    /// The copies for (B, T), width C and MLP width F.
    pub fn new(ctx: &GpuContext, (b, t, c, f): Dims) -> Result<Self> {
        let n = |s: &str| format!("grad.block.{s} (f16)");
        Ok(HalfLayerGrads {
            dqkv: f16t(ctx, n("qkv"), &[b, t, 3 * c])?,
            dattproj: f16t(ctx, n("attproj"), &[b, t, c])?,
            dfch: f16t(ctx, n("fch"), &[b, t, f])?,
            dfcproj: f16t(ctx, n("fcproj"), &[b, t, c])?,
        })
    }

    pub fn all(&self) -> [&Tensor; 4] {
        [&self.dqkv, &self.dattproj, &self.dfch, &self.dfcproj]
    }
}

/// (B, T, C, F): batch, length, width, MLP width.
pub type Dims = (usize, usize, usize, usize);

/// The tensor a matmul reads for `x`: `x` itself, or on the mixed path its f16 copy
/// `half`, recorded as cast from `x` first.
pub fn matmul_input<'a>(
    s: &mut Schedule,
    ctx: &GpuContext,
    x: &'a Tensor,
    half: Option<&'a Tensor>,
) -> Result<&'a Tensor> {
    match half {
        Some(h) => {
            cast_f32_to_f16(s, ctx, h, x, x.numel())?;
            Ok(h)
        }
        None => Ok(x),
    }
}
