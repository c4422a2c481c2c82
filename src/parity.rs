//! `wgformer parity <fixture-dir>`: compare wgformer with the numbers an independent
//! implementation computed for the same checkpoint (llm.c's test_gpt2). A fixture
//! directory holds `config.json` and `model.safetensors` (a Hugging Face GPT-2),
//! `reference.safetensors` (x, y, logits, loss, grad.<name>, losses, generate.prompt,
//! generate.greedy) and `reference.json` (the optimizer). Each comparison reports its
//! max error and tolerance; any sizes and either parameter naming work. Greedy decoding
//! runs through the KV cache (`infer::decoder`), as `wgformer generate` does.

use std::path::Path;

use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::infer::decoder::generate_greedy_cached;
use crate::infer::translate::{translate, TranslateOptions};
use crate::kernels::classifier::ClassifierChunk;
use crate::model::gpt2::{Gpt2, OptimConfig, StepConfig, Trainer};
use crate::model::half::Precision;
use crate::model::params::gpt2_param_specs;
use crate::model::seq2seq::params::values_to_torch;
use crate::model::seq2seq::trainer::Seq2seqBatchRef;
use crate::model::seq2seq::{Seq2seq, Seq2seqConfig, Seq2seqTrainer};

/// One line of a parity report.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub what: String,
    pub max_err: f64,
    pub tol: f64,
    pub pass: bool,
    /// Extra words for the line (e.g. the tokens that differ).
    pub note: String,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<44} max |Δ| {:.3e}  tol {:.3e}{}",
            if self.pass { "ok  " } else { "FAIL" },
            self.what,
            self.max_err,
            self.tol,
            if self.note.is_empty() {
                String::new()
            } else {
                format!("  {}", self.note)
            }
        )
    }
}

#[derive(Deserialize)]
struct ReferenceJson {
    optimizer: OptimizerJson,
}

#[derive(Deserialize)]
struct OptimizerJson {
    lr: f32,
    betas: (f32, f32),
    eps: f32,
    weight_decay: f32,
    #[serde(default)]
    grad_clip: Option<f32>,
    #[serde(default = "ten")]
    steps: usize,
}

fn ten() -> usize {
    10
}

struct Reference {
    bytes: Vec<u8>,
    file: String,
}

impl Reference {
    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::Invalid(format!("{}: not a safetensors file: {e}", self.file)))
    }

    fn get(&self, name: &str) -> Result<(Vec<usize>, Dtype, Vec<u8>)> {
        let st = self.tensors()?;
        let t = st
            .tensor(name)
            .map_err(|_| Error::Invalid(format!("{}: missing tensor {name}", self.file)))?;
        Ok((t.shape().to_vec(), t.dtype(), t.data().to_vec()))
    }

    fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (shape, dtype, data) = self.get(name)?;
        if dtype != Dtype::F32 {
            return Err(Error::DType {
                tensor: format!("{}: {name}", self.file),
                expected: "F32".into(),
                found: format!("{dtype:?}"),
            });
        }
        Ok((shape, bytemuck::pod_collect_to_vec(&data)))
    }

    fn i32(&self, name: &str) -> Result<(Vec<usize>, Vec<i32>)> {
        let (shape, dtype, data) = self.get(name)?;
        match dtype {
            Dtype::I32 => Ok((shape, bytemuck::pod_collect_to_vec(&data))),
            Dtype::I64 => {
                let v: Vec<i64> = bytemuck::pod_collect_to_vec(&data);
                Ok((shape, v.into_iter().map(|x| x as i32).collect()))
            }
            _ => Err(Error::DType {
                tensor: format!("{}: {name}", self.file),
                expected: "I32".into(),
                found: format!("{dtype:?}"),
            }),
        }
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, |m, d| {
            if d.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(d)
            }
        })
}

fn compare(what: String, got: &[f32], want: &[f32], tol: f64) -> Comparison {
    let max_err = if got.len() == want.len() {
        max_abs_diff(got, want)
    } else {
        f64::INFINITY
    };
    Comparison {
        what,
        max_err,
        tol,
        pass: max_err <= tol,
        note: if got.len() == want.len() {
            String::new()
        } else {
            format!("length {} vs reference {}", got.len(), want.len())
        },
    }
}

/// Run every comparison of a GPT-2 fixture on `ctx`.
pub async fn parity_gpt2(ctx: &GpuContext, dir: &Path) -> Result<Vec<Comparison>> {
    parity_gpt2_with(ctx, dir, ClassifierChunk::Auto).await
}

/// [`parity_gpt2`] with the trainer's classifier as `chunk` makes it. Chunked, the
/// logits never exist whole, so there is no logits line: the loss, every gradient and
/// the AdamW losses are compared as usual.
pub async fn parity_gpt2_with(
    ctx: &GpuContext,
    dir: &Path,
    chunk: ClassifierChunk,
) -> Result<Vec<Comparison>> {
    parity_gpt2_in(ctx, dir, chunk, Precision::F32).await
}

/// Tolerances of the f16 path relative to f32's: its matmuls read weights rounded to
/// f16 (relative error up to 2^-11), against transformers' f32 reference.
const F16_TOLERANCE_SCALE: f64 = 8.0;

/// Tolerances of the mixed path relative to f32's: its block matmuls read activations
/// and gradients rounded to f16 as well as weights.
const MIXED_TOLERANCE_SCALE: f64 = 16.0;

/// [`parity_gpt2_with`] with the model's matmuls reading weights in `precision`; in f16
/// every tolerance is [`F16_TOLERANCE_SCALE`] times f32's, mixed
/// [`MIXED_TOLERANCE_SCALE`] times (greedy decoding must still be identical). The mixed
/// path's gradients are compared unscaled ([`Trainer::gradients`]).
pub async fn parity_gpt2_in(
    ctx: &GpuContext,
    dir: &Path,
    chunk: ClassifierChunk,
    precision: Precision,
) -> Result<Vec<Comparison>> {
    let scale = match precision {
        Precision::F32 => 1.0,
        Precision::F16 => F16_TOLERANCE_SCALE,
        Precision::Mixed => MIXED_TOLERANCE_SCALE,
    };
    let compare =
        |what: String, got: &[f32], want: &[f32], tol: f64| compare(what, got, want, tol * scale);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })
    };
    let reference = Reference {
        bytes: read("reference.safetensors")?,
        file: dir.join("reference.safetensors").display().to_string(),
    };
    let rj: ReferenceJson = serde_json::from_slice(&read("reference.json")?)
        .map_err(|e| Error::Invalid(format!("{}: {e}", dir.join("reference.json").display())))?;
    let o = rj.optimizer;
    let opt = OptimConfig {
        beta1: o.betas.0,
        beta2: o.betas.1,
        eps: o.eps,
        weight_decay: o.weight_decay,
        grad_clip: o.grad_clip,
    };

    let (xshape, x) = reference.i32("x")?;
    let (_, y) = reference.i32("y")?;
    if xshape.len() != 2 {
        return Err(Error::Invalid(format!(
            "{}: x must be (B, T), is {xshape:?}",
            reference.file
        )));
    }
    let (b, t) = (xshape[0], xshape[1]);
    let mut out = Vec::new();

    let model = Gpt2::load(ctx, dir)?.with_precision(ctx, precision)?;
    let cfg = model.config.clone();
    let step_config = StepConfig {
        classifier_chunk: chunk,
        ..StepConfig::default()
    };
    let mut trainer = Trainer::with_config(ctx, model, b, t, opt, step_config)?;

    // Logits and loss from the forward pass alone.
    let loss = trainer.eval_loss(ctx, &x, &y).await?;
    if trainer.acts.classifier.is_none() {
        let logits = trainer.acts.logits.read_f32(ctx).await?;
        let (_, want_logits) = reference.f32("logits")?;
        out.push(compare("logits".into(), &logits, &want_logits, 1e-3));
    }
    let (_, want_loss) = reference.f32("loss")?;
    out.push(compare("loss".into(), &[loss], &want_loss, 1e-4));

    // Every parameter's gradient.
    trainer.forward_backward(ctx, &x, &y).await?;
    let grads = trainer.gradients(ctx).await?;
    for (spec, g) in gpt2_param_specs(&cfg).iter().zip(&grads) {
        let names = [
            format!("grad.transformer.{}", spec.name),
            format!("grad.{}", spec.name),
        ];
        let found = names.iter().find_map(|n| reference.f32(n).ok());
        let Some((_, want)) = found else {
            return Err(Error::Invalid(format!(
                "{}: missing tensor {}",
                reference.file, names[0]
            )));
        };
        let max_ref = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        out.push(compare(
            format!("grad {}", spec.name),
            g,
            &want,
            1e-4 + 1e-3 * max_ref,
        ));
    }

    // AdamW steps on the same batch: the loss before each step.
    let (_, want_losses) = reference.f32("losses")?;
    let mut losses = Vec::new();
    for _ in 0..o.steps.min(want_losses.len()) {
        losses.push(trainer.step(ctx, &x, &y, o.lr).await?);
    }
    out.push(compare(
        format!("{} AdamW step losses", losses.len()),
        &losses,
        &want_losses,
        2e-3,
    ));

    // Greedy continuation through the KV cache, from the untrained checkpoint.
    let (_, prompt) = reference.i32("generate.prompt")?;
    let (_, greedy) = reference.i32("generate.greedy")?;
    let model = Gpt2::load(ctx, dir)?.with_precision(ctx, precision)?;
    let tokens = generate_greedy_cached(ctx, &model, &prompt, prompt.len() + greedy.len()).await?;
    let got = &tokens[prompt.len()..];
    let first_diff = got.iter().zip(&greedy).position(|(a, b)| a != b);
    out.push(Comparison {
        what: format!("greedy continuation ({} tokens, KV cache)", greedy.len()),
        max_err: if first_diff.is_some() { 1.0 } else { 0.0 },
        tol: 0.0,
        pass: first_diff.is_none() && got.len() == greedy.len(),
        note: match first_diff {
            Some(i) => format!("first differs at {i}: got {} want {}", got[i], greedy[i]),
            None => "identical".into(),
        },
    });
    Ok(out)
}

/// Run the parity check the fixture in `dir` calls for: an encoder–decoder when its
/// `config.json` describes one (`d_model`, `decoder_layers`), else a GPT-2.
pub async fn parity(ctx: &GpuContext, dir: &Path) -> Result<Vec<Comparison>> {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| Error::Io {
        path: config.display().to_string(),
        source: e,
    })?;
    if Seq2seqConfig::is_seq2seq_json(&text) {
        parity_seq2seq(ctx, dir).await
    } else {
        parity_gpt2(ctx, dir).await
    }
}

/// Run every comparison of an encoder–decoder fixture (`torch.nn.Transformer`): logits,
/// loss, every gradient (torch names and layouts), and greedy decoding of every row
/// through the KV-cached translator.
pub async fn parity_seq2seq(ctx: &GpuContext, dir: &Path) -> Result<Vec<Comparison>> {
    let path = dir.join("reference.safetensors");
    let reference = Reference {
        bytes: std::fs::read(&path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?,
        file: path.display().to_string(),
    };
    let (sshape, src) = reference.i32("src")?;
    // No padding mask: no source position is padding.
    let src_pad = match reference.i32("src_pad_mask") {
        Ok((_, m)) => m,
        Err(_) => vec![0; src.len()],
    };
    let (tshape, tgt_in) = reference.i32("tgt_in")?;
    let (_, mut tgt_out) = reference.i32("tgt_out")?;
    if sshape.len() != 2 || tshape.len() != 2 || sshape[0] != tshape[0] {
        return Err(Error::Invalid(format!(
            "{}: src must be (B, S) and tgt_in (B, T) with the same B; found {sshape:?} and {tshape:?}",
            reference.file
        )));
    }
    let (b, s, t) = (sshape[0], sshape[1], tshape[1]);
    let model = Seq2seq::load(ctx, dir)?;
    let cfg = model.config.clone();
    // The loss counts every position unless config.json says padding is ignored.
    let loss_rule = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("loss")
                .and_then(|l| l.as_str())
                .map(str::to_lowercase)
        })
        .unwrap_or_default();
    if loss_rule.contains("ignor") && loss_rule.contains("pad") {
        for y in tgt_out.iter_mut().filter(|y| **y == cfg.pad_id as i32) {
            *y = crate::kernels::crossentropy::IGNORE_INDEX;
        }
    }
    let trainer = Seq2seqTrainer::new(ctx, model.clone(), (b, s, t), OptimConfig::default(), 1)?;
    let batch = Seq2seqBatchRef {
        src: &src,
        src_pad: &src_pad,
        tgt_in: &tgt_in,
        tgt_out: &tgt_out,
    };
    let mut out = Vec::new();
    let loss = trainer.eval_loss(ctx, &batch).await?;
    let logits = trainer.acts.logits.read_f32(ctx).await?;
    let (_, want_logits) = reference.f32("logits")?;
    out.push(compare("logits".into(), &logits, &want_logits, 1e-3));
    let (_, want_loss) = reference.f32("loss")?;
    out.push(compare("loss".into(), &[loss], &want_loss, 1e-4));

    trainer.forward_backward(ctx, &batch).await?;
    let grads = trainer.grads.read_all(ctx).await?;
    for (name, _, g) in values_to_torch(&cfg, &grads) {
        let (_, want) = reference.f32(&format!("grad.{name}"))?;
        let max_ref = want.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        out.push(compare(
            format!("grad {name}"),
            &g,
            &want,
            1e-4 + 1e-3 * max_ref,
        ));
    }

    // Greedy decoding from BOS for T steps, every row, through the KV cache.
    let (gshape, greedy) = reference.i32("greedy")?;
    let steps = gshape.get(1).copied().unwrap_or(0);
    let sources: Vec<Vec<u32>> = (0..b)
        .map(|r| {
            (0..s)
                .filter(|&j| src_pad[r * s + j] == 0)
                .map(|j| src[r * s + j] as u32)
                .collect()
        })
        .collect();
    let opts = TranslateOptions {
        beam: 1,
        max_len: steps,
        length_penalty: 0.0,
        stop_at_eos: false,
    };
    let hyps = translate(ctx, &model, &sources, &opts, b).await?;
    let mut differ = Vec::new();
    for (r, h) in hyps.iter().enumerate() {
        let want: Vec<u32> = greedy[r * steps..(r + 1) * steps]
            .iter()
            .map(|&x| x as u32)
            .collect();
        if h.tokens != want {
            let i = h
                .tokens
                .iter()
                .zip(&want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            differ.push(format!("row {r} first differs at {i}"));
        }
    }
    out.push(Comparison {
        what: format!("greedy decoding ({b} rows × {steps} tokens, KV cache)"),
        max_err: differ.len() as f64,
        tol: 0.0,
        pass: differ.is_empty(),
        note: if differ.is_empty() {
            "identical".into()
        } else {
            differ.join("; ")
        },
    });
    Ok(out)
}
