//! BERT's parameters: the canonical list (Hugging Face names, our shapes), the GPU
//! structs, and the mapping to and from a Hugging Face checkpoint.
//!
//! Linear weights are stored (in, out) as every kernel here expects, so HF's (out, in)
//! `nn.Linear` weights are transposed on load and back on save. The separate query, key
//! and value projections of a layer are packed into one `attention.self.qkv` (C, 3C) so
//! that one matmul and the `mha` kernels serve them, and split again on save. A model
//! carries one optional head: the masked-LM head (`cls.predictions.*`, its decoder tied
//! to the word embeddings) or a sequence classifier (`classifier.*` over the pooler).

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Tensor};
use crate::model::bert::config::BertConfig;
use crate::model::blocks::{EncoderLayerTensors, FfnTensors, NormTensors, SelfAttnTensors};
use crate::model::params::{Init, ParamSpec};
use crate::rng::Rng;

/// Which head the model carries beyond the encoder and pooler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    None,
    /// Masked language modelling: dense + GELU + LayerNorm, then the tied decoder + bias.
    Mlm,
    /// Sequence classification over the pooled [CLS] vector, with this many labels.
    Classify(usize),
}

/// Where a parameter lives in a Hugging Face checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum HfSource {
    /// The tensor `name`, as is.
    Plain(String),
    /// The `nn.Linear` weight `name` (out, in), transposed.
    Linear(String),
    /// query, key and value of the layer with this prefix (`…attention.self`), weights
    /// (transposed and packed side by side) or biases (concatenated).
    Qkv { prefix: String, weight: bool },
}

#[derive(Clone, Debug, PartialEq)]
pub struct BertParam {
    pub spec: ParamSpec,
    pub hf: HfSource,
}

/// What the parameter list's helpers push: (name, shape, init, decay, source).
type Push<'a> = dyn FnMut(&str, Vec<usize>, Init, bool, HfSource) + 'a;

/// The encoder's tensors in HF names carry this prefix inside a model with a head.
pub const BASE_PREFIX: &str = "bert.";

/// Every parameter of `cfg` with `head`, in canonical order: embeddings, the layers, the
/// pooler, the head (the order of [`BertTensors::all`]).
pub fn bert_params(cfg: &BertConfig, head: Head) -> Vec<BertParam> {
    let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
    let std = Init::Normal(0.02);
    let mut out = Vec::new();
    let mut push = |name: &str, shape: Vec<usize>, init: Init, decay: bool, hf: HfSource| {
        out.push(BertParam {
            spec: ParamSpec {
                name: name.to_string(),
                shape,
                decay,
                init,
            },
            hf,
        })
    };
    let plain = |n: &str| HfSource::Plain(n.to_string());
    let linear = |n: &str| HfSource::Linear(n.to_string());
    let norm = |push: &mut Push, n: &str| {
        let (w, b) = (format!("{n}.weight"), format!("{n}.bias"));
        push(&w, vec![c], Init::Ones, false, plain(&w));
        push(&b, vec![c], Init::Zeros, false, plain(&b));
    };
    let dense = |push: &mut Push, n: &str, i: usize, o: usize| {
        let (w, b) = (format!("{n}.weight"), format!("{n}.bias"));
        push(&w, vec![i, o], std, true, linear(&w));
        push(&b, vec![o], Init::Zeros, false, plain(&b));
    };
    for (n, rows) in [
        ("embeddings.word_embeddings.weight", cfg.vocab_size),
        (
            "embeddings.position_embeddings.weight",
            cfg.max_position_embeddings,
        ),
        (
            "embeddings.token_type_embeddings.weight",
            cfg.type_vocab_size,
        ),
    ] {
        push(n, vec![rows, c], std, true, plain(n));
    }
    norm(&mut push, "embeddings.LayerNorm");
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        let prefix = format!("{p}.attention.self");
        push(
            &format!("{prefix}.qkv.weight"),
            vec![c, 3 * c],
            std,
            true,
            HfSource::Qkv {
                prefix: prefix.clone(),
                weight: true,
            },
        );
        push(
            &format!("{prefix}.qkv.bias"),
            vec![3 * c],
            Init::Zeros,
            false,
            HfSource::Qkv {
                prefix,
                weight: false,
            },
        );
        dense(&mut push, &format!("{p}.attention.output.dense"), c, c);
        norm(&mut push, &format!("{p}.attention.output.LayerNorm"));
        dense(&mut push, &format!("{p}.intermediate.dense"), c, f);
        dense(&mut push, &format!("{p}.output.dense"), f, c);
        norm(&mut push, &format!("{p}.output.LayerNorm"));
    }
    dense(&mut push, "pooler.dense", c, c);
    match head {
        Head::None => {}
        Head::Mlm => {
            dense(&mut push, "cls.predictions.transform.dense", c, c);
            norm(&mut push, "cls.predictions.transform.LayerNorm");
            push(
                "cls.predictions.bias",
                vec![cfg.vocab_size],
                Init::Zeros,
                false,
                plain("cls.predictions.bias"),
            );
        }
        Head::Classify(n) => dense(&mut push, "classifier", c, n),
    }
    out
}

/// Whether a parameter belongs to the encoder (HF prefixes those with `bert.` in a model
/// with a head) rather than to the head.
pub fn is_base(name: &str) -> bool {
    !(name.starts_with("cls.") || name.starts_with("classifier"))
}

/// Fresh values for `cfg` with `head` from `seed`: N(0, 0.02) weights and embeddings,
/// zero biases, unit LayerNorms (BERT's initialisation).
pub fn init_values(cfg: &BertConfig, head: Head, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    bert_params(cfg, head)
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

/// (in, out) from an (out, in) matrix.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// The masked-LM head.
#[derive(Clone)]
pub struct MlmHeadTensors {
    pub dense_w: Tensor, // (C, C)
    pub dense_b: Tensor, // (C)
    pub norm: NormTensors,
    pub bias: Tensor, // (V): the decoder's bias (its weight is the word embeddings)
}

/// The sequence classifier over the pooled vector.
#[derive(Clone)]
pub struct ClassifierTensors {
    pub w: Tensor, // (C, NL)
    pub b: Tensor, // (NL)
}

/// Every parameter-shaped tensor of a BERT (weights, gradients or a moment).
#[derive(Clone)]
pub struct BertTensors {
    pub word: Tensor,  // (V, C), also the MLM decoder (tied)
    pub pos: Tensor,   // (maxT, C)
    pub types: Tensor, // (TT, C)
    pub emb_norm: NormTensors,
    pub layers: Vec<EncoderLayerTensors>, // GELU blocks: attention.output.LayerNorm is norm1, output.LayerNorm norm2
    pub pooler_w: Tensor,                 // (C, C)
    pub pooler_b: Tensor,                 // (C)
    pub mlm: Option<MlmHeadTensors>,
    pub classifier: Option<ClassifierTensors>,
}

impl BertTensors {
    pub fn new(
        ctx: &GpuContext,
        cfg: &BertConfig,
        head: Head,
        kind: &str,
        values: Option<&[Vec<f32>]>,
    ) -> Result<Self> {
        let params = bert_params(cfg, head);
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
        let word = next();
        let pos = next();
        let types = next();
        let norm = |next: &mut dyn FnMut() -> Tensor| NormTensors {
            w: next(),
            b: next(),
        };
        let emb_norm = norm(&mut next);
        let layers = (0..cfg.num_hidden_layers)
            .map(|_| {
                let sa = SelfAttnTensors {
                    qkv_w: next(),
                    qkv_b: next(),
                    out_w: next(),
                    out_b: next(),
                };
                let norm1 = norm(&mut next);
                let ffn = FfnTensors {
                    w1: next(),
                    b1: next(),
                    w2: next(),
                    b2: next(),
                };
                let norm2 = norm(&mut next);
                EncoderLayerTensors {
                    sa,
                    norm1,
                    ffn,
                    norm2,
                }
            })
            .collect();
        let pooler_w = next();
        let pooler_b = next();
        let (mut mlm, mut classifier) = (None, None);
        match head {
            Head::None => {}
            Head::Mlm => {
                mlm = Some(MlmHeadTensors {
                    dense_w: next(),
                    dense_b: next(),
                    norm: norm(&mut next),
                    bias: next(),
                })
            }
            Head::Classify(_) => {
                classifier = Some(ClassifierTensors {
                    w: next(),
                    b: next(),
                })
            }
        }
        Ok(BertTensors {
            word,
            pos,
            types,
            emb_norm,
            layers,
            pooler_w,
            pooler_b,
            mlm,
            classifier,
        })
    }

    /// Every tensor in canonical order (that of [`bert_params`]).
    pub fn all(&self) -> Vec<&Tensor> {
        let mut v = vec![
            &self.word,
            &self.pos,
            &self.types,
            &self.emb_norm.w,
            &self.emb_norm.b,
        ];
        for l in &self.layers {
            v.extend([
                &l.sa.qkv_w,
                &l.sa.qkv_b,
                &l.sa.out_w,
                &l.sa.out_b,
                &l.norm1.w,
                &l.norm1.b,
            ]);
            v.extend([
                &l.ffn.w1, &l.ffn.b1, &l.ffn.w2, &l.ffn.b2, &l.norm2.w, &l.norm2.b,
            ]);
        }
        v.extend([&self.pooler_w, &self.pooler_b]);
        if let Some(m) = &self.mlm {
            v.extend([&m.dense_w, &m.dense_b, &m.norm.w, &m.norm.b, &m.bias]);
        }
        if let Some(c) = &self.classifier {
            v.extend([&c.w, &c.b]);
        }
        v
    }

    pub fn total_bytes(&self) -> u64 {
        self.all().iter().map(|t| t.size_bytes()).sum()
    }

    pub async fn read_all(&self, ctx: &GpuContext) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for t in self.all() {
            out.push(t.read_f32(ctx).await?);
        }
        Ok(out)
    }

    pub fn write_all(&self, ctx: &GpuContext, values: &[Vec<f32>]) -> Result<()> {
        for (t, v) in self.all().into_iter().zip(values) {
            t.write(ctx, v)?;
        }
        Ok(())
    }
}
