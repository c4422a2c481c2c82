//! The encoder–decoder's parameters: one canonical list of named, shaped tensors, the
//! GPU structs that hold them (weights, gradients, AdamW moments), and the mapping to and
//! from a `torch.nn.Transformer` state dict.
//!
//! Our layout is the GPT-2 kernels' (Conv1D): a linear weight is (in, out), so torch's
//! `Linear.weight` (out, in) is transposed on load and back on save. Cross-attention's
//! `in_proj_weight` (3C, C) is split into q (C, C), applied to the decoder stream, and
//! kv (C, 2C), applied to the encoder output; self-attention's stays packed (C, 3C).
//! Every other tensor keeps torch's shape. Names are torch's; the two halves of a split
//! tensor add `:q` / `:kv`.

use std::ops::Range;

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Tensor};
use crate::model::params::{Init, ParamSpec};
use crate::model::seq2seq::config::Seq2seqConfig;
use crate::rng::Rng;

pub use crate::model::blocks::{EncoderLayerTensors, FfnTensors, NormTensors, SelfAttnTensors};

/// Where a parameter comes from in a torch state dict: rows `rows` of tensor `name`
/// (shape `shape`), transposed when it is a linear weight.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchSource {
    pub name: String,
    pub shape: Vec<usize>,
    pub rows: Range<usize>,
    pub transpose: bool,
}

/// One parameter: its spec (our name, our shape, decay group, initialisation) and source.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2seqParam {
    pub spec: ParamSpec,
    pub torch: TorchSource,
}

const ENC: &str = "transformer.encoder";
const DEC: &str = "transformer.decoder";

/// Every parameter of `cfg` in canonical order: src_emb, tgt_emb, the encoder blocks and
/// norm, the decoder blocks and norm (the order of [`Seq2seqTensors::all`]).
pub fn seq2seq_params(cfg: &Seq2seqConfig) -> Vec<Seq2seqParam> {
    let (c, f) = (cfg.d_model, cfg.ffn);
    let mut out = Vec::new();
    // The standard deviation of nn.Transformer's xavier-uniform init of a torch (out, in)
    // weight (drawn here from a normal of that variance).
    let xavier = |fan_out: usize, fan_in: usize| (2.0 / (fan_in + fan_out) as f32).sqrt();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init, decay: bool, torch: TorchSource| {
            out.push(Seq2seqParam {
                spec: ParamSpec {
                    name,
                    shape,
                    decay,
                    init,
                },
                torch,
            })
        };
    let whole = |name: &str, shape: &[usize]| TorchSource {
        name: name.to_string(),
        shape: shape.to_vec(),
        rows: 0..shape[0],
        transpose: false,
    };
    // A torch Linear (out, in) weight, rows `rows` of it, stored as (in, rows).
    let linear = |name: &str, out_f: usize, in_f: usize, rows: Range<usize>| TorchSource {
        name: name.to_string(),
        shape: vec![out_f, in_f],
        rows,
        transpose: true,
    };
    let emb_std = (c as f32).powf(-0.5);
    for (name, v) in [
        ("src_emb.weight", cfg.src_vocab),
        ("tgt_emb.weight", cfg.tgt_vocab),
    ] {
        push(
            name.into(),
            vec![v, c],
            Init::Normal(emb_std),
            true,
            whole(name, &[v, c]),
        );
    }
    let vector = |push: &mut dyn FnMut(String, Vec<usize>, Init, bool, TorchSource),
                  name: String,
                  n: usize,
                  init: Init| {
        let src = whole(&name, &[n]);
        push(name, vec![n], init, false, src);
    };
    let weight = |push: &mut dyn FnMut(String, Vec<usize>, Init, bool, TorchSource),
                  name: String,
                  out_f: usize,
                  in_f: usize| {
        let src = linear(&name, out_f, in_f, 0..out_f);
        push(
            name,
            vec![in_f, out_f],
            Init::Normal(xavier(out_f, in_f)),
            true,
            src,
        );
    };
    for (stack, layers) in [(ENC, cfg.encoder_layers), (DEC, cfg.decoder_layers)] {
        for l in 0..layers {
            let p = format!("{stack}.layers.{l}");
            weight(&mut push, format!("{p}.self_attn.in_proj_weight"), 3 * c, c);
            vector(
                &mut push,
                format!("{p}.self_attn.in_proj_bias"),
                3 * c,
                Init::Zeros,
            );
            weight(&mut push, format!("{p}.self_attn.out_proj.weight"), c, c);
            vector(
                &mut push,
                format!("{p}.self_attn.out_proj.bias"),
                c,
                Init::Zeros,
            );
            if stack == DEC {
                let w = format!("{p}.multihead_attn.in_proj_weight");
                let b = format!("{p}.multihead_attn.in_proj_bias");
                let std = Init::Normal(xavier(3 * c, c));
                push(
                    format!("{w}:q"),
                    vec![c, c],
                    std,
                    true,
                    linear(&w, 3 * c, c, 0..c),
                );
                let bias = |rows| TorchSource {
                    rows,
                    ..whole(&b, &[3 * c])
                };
                push(format!("{b}:q"), vec![c], Init::Zeros, false, bias(0..c));
                push(
                    format!("{w}:kv"),
                    vec![c, 2 * c],
                    std,
                    true,
                    linear(&w, 3 * c, c, c..3 * c),
                );
                push(
                    format!("{b}:kv"),
                    vec![2 * c],
                    Init::Zeros,
                    false,
                    bias(c..3 * c),
                );
                weight(
                    &mut push,
                    format!("{p}.multihead_attn.out_proj.weight"),
                    c,
                    c,
                );
                vector(
                    &mut push,
                    format!("{p}.multihead_attn.out_proj.bias"),
                    c,
                    Init::Zeros,
                );
            }
            weight(&mut push, format!("{p}.linear1.weight"), f, c);
            vector(&mut push, format!("{p}.linear1.bias"), f, Init::Zeros);
            weight(&mut push, format!("{p}.linear2.weight"), c, f);
            vector(&mut push, format!("{p}.linear2.bias"), c, Init::Zeros);
            let norms = if stack == DEC { 3 } else { 2 };
            for n in 1..=norms {
                vector(&mut push, format!("{p}.norm{n}.weight"), c, Init::Ones);
                vector(&mut push, format!("{p}.norm{n}.bias"), c, Init::Zeros);
            }
        }
        vector(&mut push, format!("{stack}.norm.weight"), c, Init::Ones);
        vector(&mut push, format!("{stack}.norm.bias"), c, Init::Zeros);
    }
    out
}

/// The torch state dict's tensors, (name, shape), each once, in first-use order.
pub fn torch_tensors(cfg: &Seq2seqConfig) -> Vec<(String, Vec<usize>)> {
    let mut seen: Vec<(String, Vec<usize>)> = Vec::new();
    for p in seq2seq_params(cfg) {
        if !seen.iter().any(|(n, _)| *n == p.torch.name) {
            seen.push((p.torch.name.clone(), p.torch.shape.clone()));
        }
    }
    seen
}

/// Our value of parameter `p` from the whole torch tensor `src`.
pub fn from_torch(p: &Seq2seqParam, src: &[f32]) -> Vec<f32> {
    let cols: usize = p.torch.shape[1..].iter().product();
    let rows = &src[p.torch.rows.start * cols..p.torch.rows.end * cols];
    if !p.torch.transpose {
        return rows.to_vec();
    }
    let n = p.torch.rows.len(); // our columns
    let mut out = vec![0f32; rows.len()];
    for o in 0..n {
        for i in 0..cols {
            out[i * n + o] = rows[o * cols + i];
        }
    }
    out
}

/// Write our value `v` of parameter `p` into its place in the whole torch tensor `dst`.
pub fn to_torch(p: &Seq2seqParam, v: &[f32], dst: &mut [f32]) {
    let cols: usize = p.torch.shape[1..].iter().product();
    let rows = &mut dst[p.torch.rows.start * cols..p.torch.rows.end * cols];
    if !p.torch.transpose {
        rows.copy_from_slice(v);
        return;
    }
    let n = p.torch.rows.len();
    for o in 0..n {
        for i in 0..cols {
            rows[o * cols + i] = v[i * n + o];
        }
    }
}

/// Our values (canonical order) as the torch state dict: (name, shape, values).
pub fn values_to_torch(
    cfg: &Seq2seqConfig,
    values: &[Vec<f32>],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let params = seq2seq_params(cfg);
    let mut out: Vec<(String, Vec<usize>, Vec<f32>)> = torch_tensors(cfg)
        .into_iter()
        .map(|(n, s)| {
            let numel = s.iter().product();
            (n, s, vec![0f32; numel])
        })
        .collect();
    for (p, v) in params.iter().zip(values) {
        let slot = out
            .iter_mut()
            .find(|(n, _, _)| *n == p.torch.name)
            .expect("every source is listed");
        to_torch(p, v, &mut slot.2);
    }
    out
}

/// Fresh values for every parameter from `seed`: linear weights with the variance of
/// torch.nn.Transformer's xavier-uniform init (drawn from a normal), zero biases, unit
/// norms, and N(0, 1/C) embeddings (unit scale after the √C embedding scale).
pub fn init_values(cfg: &Seq2seqConfig, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    seq2seq_params(cfg)
        .iter()
        .map(|p| {
            let n = p.spec.numel();
            match p.spec.init {
                Init::Normal(std) => rng.vec_normal(n, std),
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
            }
        })
        .collect()
}

/// Cross-attention of a decoder block: queries from the decoder stream, keys and values
/// from the encoder output.
#[derive(Clone)]
pub struct CrossAttnTensors {
    pub q_w: Tensor,   // (C, C): applied to the decoder stream
    pub q_b: Tensor,   // (C)
    pub kv_w: Tensor,  // (C, 2C): applied to the encoder output
    pub kv_b: Tensor,  // (2C)
    pub out_w: Tensor, // (C, C)
    pub out_b: Tensor, // (C)
}

/// One decoder block: x = norm1(x + causal self_attn(x)); x = norm2(x + cross_attn(x,
/// memory)); x = norm3(x + ffn(x)).
#[derive(Clone)]
pub struct DecoderLayerTensors {
    pub sa: SelfAttnTensors,
    pub ca: CrossAttnTensors,
    pub ffn: FfnTensors,
    pub norm1: NormTensors,
    pub norm2: NormTensors,
    pub norm3: NormTensors,
}

/// Every parameter-shaped tensor of the model (weights, gradients or a moment).
#[derive(Clone)]
pub struct Seq2seqTensors {
    pub src_emb: Tensor, // (Vs, C)
    pub tgt_emb: Tensor, // (Vt, C), also the output head (tied)
    pub enc: Vec<EncoderLayerTensors>,
    pub enc_norm: NormTensors,
    pub dec: Vec<DecoderLayerTensors>,
    pub dec_norm: NormTensors,
}

impl Seq2seqTensors {
    /// Allocate every tensor of `cfg`, zero-filled or from `values` (canonical order);
    /// `kind` prefixes the labels.
    pub fn new(
        ctx: &GpuContext,
        cfg: &Seq2seqConfig,
        kind: &str,
        values: Option<&[Vec<f32>]>,
    ) -> Result<Self> {
        let params = seq2seq_params(cfg);
        let mut made = Vec::with_capacity(params.len());
        for (i, p) in params.iter().enumerate() {
            let label = format!("{kind}.{}", p.spec.name);
            made.push(match values {
                Some(v) => Tensor::from_f32(ctx, &label, &p.spec.shape, &v[i])?,
                None => Tensor::zeros(ctx, &label, &p.spec.shape, DType::F32)?,
            });
        }
        let mut it = made.into_iter();
        let mut next = || it.next().expect("one tensor per parameter");
        let src_emb = next();
        let tgt_emb = next();
        let sa = |next: &mut dyn FnMut() -> Tensor| SelfAttnTensors {
            qkv_w: next(),
            qkv_b: next(),
            out_w: next(),
            out_b: next(),
        };
        let ffn = |next: &mut dyn FnMut() -> Tensor| FfnTensors {
            w1: next(),
            b1: next(),
            w2: next(),
            b2: next(),
        };
        let norm = |next: &mut dyn FnMut() -> Tensor| NormTensors {
            w: next(),
            b: next(),
        };
        let enc = (0..cfg.encoder_layers)
            .map(|_| EncoderLayerTensors {
                sa: sa(&mut next),
                ffn: ffn(&mut next),
                norm1: norm(&mut next),
                norm2: norm(&mut next),
            })
            .collect();
        let enc_norm = norm(&mut next);
        let dec = (0..cfg.decoder_layers)
            .map(|_| DecoderLayerTensors {
                sa: sa(&mut next),
                ca: CrossAttnTensors {
                    q_w: next(),
                    q_b: next(),
                    kv_w: next(),
                    kv_b: next(),
                    out_w: next(),
                    out_b: next(),
                },
                ffn: ffn(&mut next),
                norm1: norm(&mut next),
                norm2: norm(&mut next),
                norm3: norm(&mut next),
            })
            .collect();
        let dec_norm = norm(&mut next);
        Ok(Seq2seqTensors {
            src_emb,
            tgt_emb,
            enc,
            enc_norm,
            dec,
            dec_norm,
        })
    }

    /// Every tensor in canonical order (that of [`seq2seq_params`]).
    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.src_emb, &self.tgt_emb];
        for l in &self.enc {
            v.extend([&l.sa.qkv_w, &l.sa.qkv_b, &l.sa.out_w, &l.sa.out_b]);
            v.extend([&l.ffn.w1, &l.ffn.b1, &l.ffn.w2, &l.ffn.b2]);
            v.extend([&l.norm1.w, &l.norm1.b, &l.norm2.w, &l.norm2.b]);
        }
        v.extend([&self.enc_norm.w, &self.enc_norm.b]);
        for l in &self.dec {
            v.extend([&l.sa.qkv_w, &l.sa.qkv_b, &l.sa.out_w, &l.sa.out_b]);
            let ca = &l.ca;
            v.extend([&ca.q_w, &ca.q_b, &ca.kv_w, &ca.kv_b, &ca.out_w, &ca.out_b]);
            v.extend([&l.ffn.w1, &l.ffn.b1, &l.ffn.w2, &l.ffn.b2]);
            v.extend([
                &l.norm1.w, &l.norm1.b, &l.norm2.w, &l.norm2.b, &l.norm3.w, &l.norm3.b,
            ]);
        }
        v.extend([&self.dec_norm.w, &self.dec_norm.b]);
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
