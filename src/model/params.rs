//! The parameters of a GPT-2 as a list of named, shaped tensors in one canonical order
//! (llm.c's order, Hugging Face's names without the `transformer.` prefix), with each
//! tensor's initialisation and weight-decay group. The GPU structs in `model::gpt2` and
//! the checkpoint code both walk this list, so they cannot disagree.

use crate::model::config::Gpt2Config;
use crate::rng::Rng;

/// How a parameter is initialised (GPT-2's scheme).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Normal(f32),
    Zeros,
    Ones,
}

/// One parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Hugging Face name without the `transformer.` prefix, e.g. `h.0.attn.c_attn.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    /// In the weight-decay group: matrices and embeddings yes, biases and layernorm no.
    pub decay: bool,
    pub init: Init,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The parameters of a layer, in order, as (suffix, shape, decay, init).
fn layer_specs(cfg: &Gpt2Config) -> Vec<(&'static str, Vec<usize>, bool, Init)> {
    let c = cfg.n_embd;
    let f = cfg.mlp_width();
    let std = 0.02f32;
    // GPT-2 scales the residual projections by 1/sqrt(2L): two per layer add into the stream.
    let resid_std = std / ((2 * cfg.n_layer) as f32).sqrt();
    vec![
        ("ln_1.weight", vec![c], false, Init::Ones),
        ("ln_1.bias", vec![c], false, Init::Zeros),
        (
            "attn.c_attn.weight",
            vec![c, 3 * c],
            true,
            Init::Normal(std),
        ),
        ("attn.c_attn.bias", vec![3 * c], false, Init::Zeros),
        (
            "attn.c_proj.weight",
            vec![c, c],
            true,
            Init::Normal(resid_std),
        ),
        ("attn.c_proj.bias", vec![c], false, Init::Zeros),
        ("ln_2.weight", vec![c], false, Init::Ones),
        ("ln_2.bias", vec![c], false, Init::Zeros),
        ("mlp.c_fc.weight", vec![c, f], true, Init::Normal(std)),
        ("mlp.c_fc.bias", vec![f], false, Init::Zeros),
        (
            "mlp.c_proj.weight",
            vec![f, c],
            true,
            Init::Normal(resid_std),
        ),
        ("mlp.c_proj.bias", vec![c], false, Init::Zeros),
    ]
}

/// Number of tensors per transformer block.
pub const TENSORS_PER_LAYER: usize = 12;

/// Every parameter of `cfg`, in canonical order: wte, wpe, the blocks, ln_f.
pub fn gpt2_param_specs(cfg: &Gpt2Config) -> Vec<ParamSpec> {
    let c = cfg.n_embd;
    let mut v = vec![
        ParamSpec {
            name: "wte.weight".into(),
            shape: vec![cfg.vocab_size, c],
            decay: true,
            init: Init::Normal(0.02),
        },
        ParamSpec {
            name: "wpe.weight".into(),
            shape: vec![cfg.n_positions, c],
            decay: true,
            init: Init::Normal(0.02),
        },
    ];
    for l in 0..cfg.n_layer {
        for (suffix, shape, decay, init) in layer_specs(cfg) {
            v.push(ParamSpec {
                name: format!("h.{l}.{suffix}"),
                shape,
                decay,
                init,
            });
        }
    }
    v.push(ParamSpec {
        name: "ln_f.weight".into(),
        shape: vec![c],
        decay: false,
        init: Init::Ones,
    });
    v.push(ParamSpec {
        name: "ln_f.bias".into(),
        shape: vec![c],
        decay: false,
        init: Init::Zeros,
    });
    v
}

/// Total parameter count (the tied head counted once).
pub fn num_parameters(cfg: &Gpt2Config) -> usize {
    gpt2_param_specs(cfg).iter().map(|p| p.numel()).sum()
}

/// Fresh host values for every parameter, initialised as GPT-2 from `seed`.
pub fn init_params(cfg: &Gpt2Config, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    gpt2_param_specs(cfg)
        .iter()
        .map(|p| match p.init {
            Init::Normal(std) => rng.vec_normal(p.numel(), std),
            Init::Zeros => vec![0.0; p.numel()],
            Init::Ones => vec![1.0; p.numel()],
        })
        .collect()
}
