//! GPT-2's parameters on the GPU as named structs (llm.c's `ParameterTensors`): one
//! [`ParamTensors`] each for the weights, their gradients and AdamW's two moments, all
//! sized from the config and allocated once. The field order is the canonical order of
//! `params::gpt2_param_specs`, and [`ParamTensors::all`] walks it.

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Tensor};
use crate::model::config::Gpt2Config;
use crate::model::params::{gpt2_param_specs, ParamSpec, TENSORS_PER_LAYER};

/// One transformer block's parameters (Conv1D layout: weights are (in, out)).
#[derive(Clone)]
pub struct LayerTensors {
    pub ln_1_w: Tensor,     // (C)
    pub ln_1_b: Tensor,     // (C)
    pub c_attn_w: Tensor,   // (C, 3C)
    pub c_attn_b: Tensor,   // (3C)
    pub c_proj_w: Tensor,   // (C, C)
    pub c_proj_b: Tensor,   // (C)
    pub ln_2_w: Tensor,     // (C)
    pub ln_2_b: Tensor,     // (C)
    pub c_fc_w: Tensor,     // (C, 4C)
    pub c_fc_b: Tensor,     // (4C)
    pub mlp_proj_w: Tensor, // (4C, C)
    pub mlp_proj_b: Tensor, // (C)
}

/// Every parameter-shaped tensor of a GPT-2 (weights, or their gradients, or a moment).
#[derive(Clone)]
pub struct ParamTensors {
    pub wte: Tensor,               // (V, C), also the output head (tied)
    pub wpe: Tensor,               // (maxT, C)
    pub layers: Vec<LayerTensors>, // L blocks
    pub ln_f_w: Tensor,            // (C)
    pub ln_f_b: Tensor,            // (C)
}

impl LayerTensors {
    fn all(&self) -> [&Tensor; TENSORS_PER_LAYER] {
        [
            &self.ln_1_w,
            &self.ln_1_b,
            &self.c_attn_w,
            &self.c_attn_b,
            &self.c_proj_w,
            &self.c_proj_b,
            &self.ln_2_w,
            &self.ln_2_b,
            &self.c_fc_w,
            &self.c_fc_b,
            &self.mlp_proj_w,
            &self.mlp_proj_b,
        ]
    }
}

impl ParamTensors {
    /// Allocate every tensor for `cfg`, zero-filled or from `values` (in spec order).
    /// `kind` prefixes the labels ("param", "grad", "adam.m", ...).
    pub fn new(
        ctx: &GpuContext,
        cfg: &Gpt2Config,
        kind: &str,
        values: Option<&[Vec<f32>]>,
    ) -> Result<Self> {
        let specs = gpt2_param_specs(cfg);
        let mut made = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let label = format!("{kind}.{}", spec.name);
            made.push(match values {
                Some(v) => Tensor::from_f32(ctx, &label, &spec.shape, &v[i])?,
                None => Tensor::zeros(ctx, &label, &spec.shape, DType::F32)?,
            });
        }
        let mut it = made.into_iter();
        let mut next = || it.next().expect("one tensor per spec");
        let wte = next();
        let wpe = next();
        let layers = (0..cfg.n_layer)
            .map(|_| LayerTensors {
                ln_1_w: next(),
                ln_1_b: next(),
                c_attn_w: next(),
                c_attn_b: next(),
                c_proj_w: next(),
                c_proj_b: next(),
                ln_2_w: next(),
                ln_2_b: next(),
                c_fc_w: next(),
                c_fc_b: next(),
                mlp_proj_w: next(),
                mlp_proj_b: next(),
            })
            .collect();
        let ln_f_w = next();
        let ln_f_b = next();
        Ok(ParamTensors {
            wte,
            wpe,
            layers,
            ln_f_w,
            ln_f_b,
        })
    }

    /// Every tensor, in the canonical order of `gpt2_param_specs`.
    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.wte, &self.wpe];
        for l in &self.layers {
            v.extend(l.all());
        }
        v.push(&self.ln_f_w);
        v.push(&self.ln_f_b);
        v
    }

    pub fn total_bytes(&self) -> u64 {
        self.all().iter().map(|t| t.size_bytes()).sum()
    }

    /// Read every tensor back, in canonical order.
    pub async fn read_all(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for t in self.all() {
            out.push(t.read_f32(ctx).await?);
        }
        Ok(out)
    }

    /// Overwrite every tensor from host values in canonical order.
    pub fn write_all(&self, ctx: &GpuContext, values: &[Vec<f32>]) -> Result<()> {
        for (t, v) in self.all().into_iter().zip(values) {
            t.write(ctx, v)?;
        }
        Ok(())
    }
}

/// Pair each tensor with its spec (name, decay group), in canonical order.
pub fn with_specs<'a>(cfg: &Gpt2Config, t: &'a ParamTensors) -> Vec<(ParamSpec, &'a Tensor)> {
    gpt2_param_specs(cfg).into_iter().zip(t.all()).collect()
}
