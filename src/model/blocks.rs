//! The sublayers every post-LN transformer block here is made of, shared by the
//! encoder–decoder (`model::seq2seq`) and BERT (`model::bert`): self-attention over
//! packed q, k, v (`mha`), the residual add followed by LayerNorm, and the two-matmul
//! feed-forward with ReLU or exact GELU; and the whole encoder block built from them
//! (x = norm1(x + self_attn(x)); x = norm2(x + ffn(x))), its parameters and activations.
//! Each `_forward` has its `_backward` below it, which adds into every gradient (the
//! caller zeroes them).

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Schedule, Tensor};
use crate::kernels::dropout::{drop_in_place, undrop_in_place, Dropout};
use crate::kernels::gelu::{gelu_erf_backward, gelu_erf_forward};
use crate::kernels::layernorm::{residual_layernorm_backward, residual_layernorm_forward};
use crate::kernels::matmul::{matmul_backward, matmul_forward};
use crate::kernels::mha::{mha_backward, mha_forward, MhaLayout};
use crate::kernels::relu::{relu_backward, relu_forward};

/// Self-attention of one block, q, k and v packed.
#[derive(Clone)]
pub struct SelfAttnTensors {
    pub qkv_w: Tensor, // (C, 3C)
    pub qkv_b: Tensor, // (3C)
    pub out_w: Tensor, // (C, C)
    pub out_b: Tensor, // (C)
}

#[derive(Clone)]
pub struct FfnTensors {
    pub w1: Tensor, // (C, F)
    pub b1: Tensor, // (F)
    pub w2: Tensor, // (F, C)
    pub b2: Tensor, // (C)
}

#[derive(Clone)]
pub struct NormTensors {
    pub w: Tensor, // (C)
    pub b: Tensor, // (C)
}

/// The feed-forward's nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// torch.nn.Transformer's default.
    Relu,
    /// x·Φ(x) with the exact erf (BERT's "gelu").
    GeluErf,
}

/// x (B, T, C) → out: self-attention sublayer's q, k, v, attention and projection.
#[allow(clippy::too_many_arguments)]
pub fn self_attn_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    w: &SelfAttnTensors,
    (qkv, att, stats, proj): (&Tensor, &Tensor, &Tensor, &Tensor),
    x: &Tensor,
    mask: Option<&Tensor>,
    (b, t, c, nh): (usize, usize, usize, usize),
    causal: bool,
) -> Result<()> {
    matmul_forward(s, ctx, qkv, x, &w.qkv_w, Some(&w.qkv_b), b * t, c, 3 * c)?;
    mha_forward(
        s,
        ctx,
        att,
        stats,
        qkv,
        qkv,
        mask,
        MhaLayout::packed(c),
        b,
        t,
        t,
        c,
        nh,
        causal,
    )?;
    matmul_forward(s, ctx, proj, att, &w.out_w, Some(&w.out_b), b * t, c, c)
}

/// Post-LN residual: res = x + sub; out = norm(res). One fused launch.
#[allow(clippy::too_many_arguments)]
pub fn add_norm_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    (res, out, mean, rstd): (&Tensor, &Tensor, &Tensor, &Tensor),
    x: &Tensor,
    sub: &Tensor,
    norm: &NormTensors,
    (b, t, c): (usize, usize, usize),
    eps: f32,
) -> Result<()> {
    residual_layernorm_forward(
        s, ctx, res, out, mean, rstd, x, sub, &norm.w, &norm.b, b, t, c, eps,
    )
}

/// Feed-forward: out = act(x·W1 + b1)·W2 + b2.
#[allow(clippy::too_many_arguments)]
pub fn ffn_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    w: &FfnTensors,
    (ff1, ff1_act, ff2): (&Tensor, &Tensor, &Tensor),
    x: &Tensor,
    (bt, c, f): (usize, usize, usize),
    act: Activation,
) -> Result<()> {
    matmul_forward(s, ctx, ff1, x, &w.w1, Some(&w.b1), bt, c, f)?;
    match act {
        Activation::Relu => relu_forward(s, ctx, ff1_act, ff1, bt * f)?,
        Activation::GeluErf => gelu_erf_forward(s, ctx, ff1_act, ff1, bt * f)?,
    }
    matmul_forward(s, ctx, ff2, ff1_act, &w.w2, Some(&w.b2), bt, f, c)
}

/// Backward of [`add_norm_forward`]: dres += norm'(dout); dx += dres; dsub += dres, the
/// first fused with the other two.
#[allow(clippy::too_many_arguments)]
pub fn add_norm_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    (dx, dsub): (&Tensor, &Tensor),
    (dnorm, dres): (&NormTensors, &Tensor),
    dout: &Tensor,
    (res, mean, rstd): (&Tensor, &Tensor, &Tensor),
    norm: &NormTensors,
    (b, t, c): (usize, usize, usize),
) -> Result<()> {
    residual_layernorm_backward(
        s, ctx, dx, dsub, dres, &dnorm.w, &dnorm.b, dout, res, &norm.w, mean, rstd, b, t, c,
    )
}

/// Backward of [`ffn_forward`]: dx += ..., and the weights' gradients.
#[allow(clippy::too_many_arguments)]
pub fn ffn_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    g: &FfnTensors,
    (dff1, dff1_act, dff2): (&Tensor, &Tensor, &Tensor),
    x: &Tensor,
    (ff1, ff1_act): (&Tensor, &Tensor),
    w: &FfnTensors,
    (bt, c, f): (usize, usize, usize),
    act: Activation,
) -> Result<()> {
    matmul_backward(
        s,
        ctx,
        dff1_act,
        &g.w2,
        Some(&g.b2),
        dff2,
        ff1_act,
        &w.w2,
        bt,
        f,
        c,
    )?;
    match act {
        Activation::Relu => relu_backward(s, ctx, dff1, ff1, dff1_act, bt * f)?,
        Activation::GeluErf => gelu_erf_backward(s, ctx, dff1, ff1, dff1_act, bt * f)?,
    }
    matmul_backward(s, ctx, dx, &g.w1, Some(&g.b1), dff1, x, &w.w1, bt, c, f)
}

/// Backward of [`self_attn_forward`].
#[allow(clippy::too_many_arguments)]
pub fn self_attn_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    g: &SelfAttnTensors,
    (dqkv, datt, dproj): (&Tensor, &Tensor, &Tensor),
    x: &Tensor,
    (qkv, att, stats): (&Tensor, &Tensor, &Tensor),
    w: &SelfAttnTensors,
    mask: Option<&Tensor>,
    (b, t, c, nh): (usize, usize, usize, usize),
    causal: bool,
) -> Result<()> {
    matmul_backward(
        s,
        ctx,
        datt,
        &g.out_w,
        Some(&g.out_b),
        dproj,
        att,
        &w.out_w,
        b * t,
        c,
        c,
    )?;
    let packed = MhaLayout::packed(c);
    mha_backward(
        s, ctx, dqkv, dqkv, datt, qkv, qkv, mask, att, stats, packed, b, t, t, c, nh, causal,
    )?;
    matmul_backward(
        s,
        ctx,
        dx,
        &g.qkv_w,
        Some(&g.qkv_b),
        dqkv,
        x,
        &w.qkv_w,
        b * t,
        c,
        3 * c,
    )
}

/// One encoder block's parameters: x = norm1(x + self_attn(x)); x = norm2(x + ffn(x)).
#[derive(Clone)]
pub struct EncoderLayerTensors {
    pub sa: SelfAttnTensors,
    pub norm1: NormTensors,
    pub ffn: FfnTensors,
    pub norm2: NormTensors,
}

/// One encoder block's activations at (B, T). Also used for their gradients, where the
/// mean, rstd and stats fields are unused (see [`shared_block_grads`]).
#[derive(Clone)]
pub struct EncoderLayerActs {
    pub qkv: Tensor,       // (B, T, 3C)
    pub att: Tensor,       // (B, T, C)
    pub att_stats: Tensor, // (B, NH, T)
    pub attproj: Tensor,   // (B, T, C)
    pub res1: Tensor,      // (B, T, C): x + attproj
    pub x1: Tensor,        // (B, T, C): norm1(res1)
    pub x1_mean: Tensor,   // (B, T)
    pub x1_rstd: Tensor,   // (B, T)
    pub ff1: Tensor,       // (B, T, F)
    pub ff1_act: Tensor,   // (B, T, F)
    pub ff2: Tensor,       // (B, T, C)
    pub res2: Tensor,      // (B, T, C): x1 + ff2
    pub x2: Tensor,        // (B, T, C): norm2(res2), the block's output
    pub x2_mean: Tensor,   // (B, T)
    pub x2_rstd: Tensor,   // (B, T)
}

impl EncoderLayerActs {
    /// Zeroed activations labelled `<prefix><name>`.
    pub fn new(
        ctx: &GpuContext,
        prefix: &str,
        (b, t, c, nh, f): (usize, usize, usize, usize, usize),
    ) -> Result<Self> {
        let z = |n: &str, shape: &[usize]| {
            Tensor::zeros(ctx, &format!("{prefix}{n}"), shape, DType::F32)
        };
        let (btc, bt) = ([b, t, c], [b, t]);
        Ok(EncoderLayerActs {
            qkv: z("qkv", &[b, t, 3 * c])?,
            att: z("att", &btc)?,
            att_stats: z("att_stats", &[b, nh, t])?,
            attproj: z("attproj", &btc)?,
            res1: z("res1", &btc)?,
            x1: z("x1", &btc)?,
            x1_mean: z("x1_mean", &bt)?,
            x1_rstd: z("x1_rstd", &bt)?,
            ff1: z("ff1", &[b, t, f])?,
            ff1_act: z("ff1_act", &[b, t, f])?,
            ff2: z("ff2", &btc)?,
            res2: z("res2", &btc)?,
            x2: z("x2", &btc)?,
            x2_mean: z("x2_mean", &bt)?,
            x2_rstd: z("x2_rstd", &bt)?,
        })
    }

    pub fn all(&self) -> [&Tensor; 15] {
        [
            &self.qkv,
            &self.att,
            &self.att_stats,
            &self.attproj,
            &self.res1,
            &self.x1,
            &self.x1_mean,
            &self.x1_rstd,
            &self.ff1,
            &self.ff1_act,
            &self.ff2,
            &self.res2,
            &self.x2,
            &self.x2_mean,
            &self.x2_rstd,
        ]
    }
}

impl GradTwin for EncoderLayerActs {
    fn accumulated(&self) -> Vec<&Tensor> {
        vec![
            &self.qkv,
            &self.att,
            &self.attproj,
            &self.res1,
            &self.x1,
            &self.ff1,
            &self.ff1_act,
            &self.ff2,
            &self.res2,
            &self.x2,
        ]
    }
    fn output(&self) -> &Tensor {
        &self.x2
    }
    fn output_mut(&mut self) -> &mut Tensor {
        &mut self.x2
    }
}

/// A block's activations struct used for the gradients of its activations (a model's
/// "gradient twin"; GPT-2 keeps its block gradients in structs of their own instead).
pub trait GradTwin: Clone {
    /// The gradients the block's backward adds into (not the unused means, rstds and
    /// stats).
    fn accumulated(&self) -> Vec<&Tensor>;
    /// The gradient of the block's output: the block above's backward adds into it (its
    /// input's gradient), this block's backward reads it.
    fn output(&self) -> &Tensor;
    fn output_mut(&mut self) -> &mut Tensor;
}

/// The activation gradients of `n` blocks whose backward runs them last to first, made
/// from `one` block's set and a second output gradient `odd_output`. Each block's
/// gradients are dead once the block below starts, so every block gets `one`'s tensors
/// (clones share the buffer), except the output gradient, which the block above writes
/// while this block's are still in use: blocks of even index get `one`'s, odd ones
/// `odd_output`. The set then costs one block's memory whatever `n`; the backward must
/// zero each block's tensors before it adds into them ([`zero_block_grads`]), and a
/// tensor list built from the blocks must be deduplicated ([`unique_tensors`]).
pub fn shared_block_grads<A: GradTwin>(one: A, odd_output: Tensor, n: usize) -> Vec<A> {
    (0..n)
        .map(|l| {
            let mut a = one.clone();
            if l % 2 == 1 {
                *a.output_mut() = odd_output.clone();
            }
            a
        })
        .collect()
}

/// Record, before block l's backward (blocks run last to first), the zeroing of what it
/// adds into that a block above may have used: its own tensors but the output gradient
/// (which holds its input), and block l − 1's output gradient (block l's input gradient,
/// which block l + 1 read when the sets are [`shared_block_grads`]). The topmost block
/// needs none: the caller zeroes every gradient before the backward. With a set per
/// block this zeroes tensors nothing has written yet, which is harmless.
pub fn zero_block_grads<A: GradTwin>(s: &mut Schedule, d: &[A], l: usize) {
    if l + 1 >= d.len() {
        return;
    }
    let out = &d[l].output().buffer;
    for t in d[l].accumulated() {
        if &t.buffer != out {
            s.clear(t);
        }
    }
    if l > 0 {
        s.clear(d[l - 1].output());
    }
}

/// `v` with each buffer once (block gradient sets share tensors).
pub fn unique_tensors(v: Vec<&Tensor>) -> Vec<&Tensor> {
    let mut out: Vec<&Tensor> = Vec::with_capacity(v.len());
    for t in v {
        if !out.iter().any(|u| u.buffer == t.buffer) {
            out.push(t);
        }
    }
    out
}

/// One encoder block over x (B, T, C), bidirectional attention with the key padding
/// `mask` (B, T) (nonzero = padding): the output is `a.x2`. With `dropout`, the
/// attention and feed-forward outputs are dropped in place before their residual adds
/// (as Hugging Face's BertSelfOutput and BertOutput do) with the masks of `sites`, so
/// `a.attproj` and `a.ff2` hold the dropped values.
#[allow(clippy::too_many_arguments)]
pub fn encoder_layer_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    w: &EncoderLayerTensors,
    a: &EncoderLayerActs,
    x: &Tensor,
    mask: Option<&Tensor>,
    (b, t, c, nh, f): (usize, usize, usize, usize, usize),
    eps: f32,
    act: Activation,
    (dropout, sites): (Option<&Dropout>, [u32; 2]),
) -> Result<()> {
    let drop = |s: &mut Schedule, x: &Tensor, i: usize| drop_in_place(s, ctx, dropout, x, sites[i]);
    self_attn_forward(
        s,
        ctx,
        &w.sa,
        (&a.qkv, &a.att, &a.att_stats, &a.attproj),
        x,
        mask,
        (b, t, c, nh),
        false,
    )?;
    drop(s, &a.attproj, 0)?;
    add_norm_forward(
        s,
        ctx,
        (&a.res1, &a.x1, &a.x1_mean, &a.x1_rstd),
        x,
        &a.attproj,
        &w.norm1,
        (b, t, c),
        eps,
    )?;
    ffn_forward(
        s,
        ctx,
        &w.ffn,
        (&a.ff1, &a.ff1_act, &a.ff2),
        &a.x1,
        (b * t, c, f),
        act,
    )?;
    drop(s, &a.ff2, 1)?;
    add_norm_forward(
        s,
        ctx,
        (&a.res2, &a.x2, &a.x2_mean, &a.x2_rstd),
        &a.x1,
        &a.ff2,
        &w.norm2,
        (b, t, c),
        eps,
    )
}

/// Backward of [`encoder_layer_forward`] (with the same dropout) from the gradient in
/// `d.x2`: dx += the input's gradient, `g` += the parameters'.
#[allow(clippy::too_many_arguments)]
pub fn encoder_layer_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    g: &EncoderLayerTensors,
    d: &EncoderLayerActs,
    x: &Tensor,
    a: &EncoderLayerActs,
    w: &EncoderLayerTensors,
    mask: Option<&Tensor>,
    (b, t, c, nh, f): (usize, usize, usize, usize, usize),
    act: Activation,
    (dropout, sites): (Option<&Dropout>, [u32; 2]),
) -> Result<()> {
    let undrop =
        |s: &mut Schedule, dx: &Tensor, i: usize| undrop_in_place(s, ctx, dropout, dx, sites[i]);
    let btc = (b, t, c);
    add_norm_backward(
        s,
        ctx,
        (&d.x1, &d.ff2),
        (&g.norm2, &d.res2),
        &d.x2,
        (&a.res2, &a.x2_mean, &a.x2_rstd),
        &w.norm2,
        btc,
    )?;
    undrop(s, &d.ff2, 1)?;
    ffn_backward(
        s,
        ctx,
        &d.x1,
        &g.ffn,
        (&d.ff1, &d.ff1_act, &d.ff2),
        &a.x1,
        (&a.ff1, &a.ff1_act),
        &w.ffn,
        (b * t, c, f),
        act,
    )?;
    add_norm_backward(
        s,
        ctx,
        (dx, &d.attproj),
        (&g.norm1, &d.res1),
        &d.x1,
        (&a.res1, &a.x1_mean, &a.x1_rstd),
        &w.norm1,
        btc,
    )?;
    undrop(s, &d.attproj, 0)?;
    self_attn_backward(
        s,
        ctx,
        dx,
        &g.sa,
        (&d.qkv, &d.att, &d.attproj),
        x,
        (&a.qkv, &a.att, &a.att_stats),
        &w.sa,
        mask,
        (b, t, c, nh),
        false,
    )
}
