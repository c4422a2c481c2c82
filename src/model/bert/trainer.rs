//! BERT training as one submit per step (masked-LM or classification, whichever head the
//! model carries), evaluation, and sentence embeddings. As the other trainers: the K
//! micro-batches of a step are uploaded together and copied into the activations' inputs
//! one after another inside the step's command buffer; only the loss stats come back.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Readback, Schedule, Tensor};
use crate::kernels::adamw::AdamwStep;
use crate::kernels::classifier::ClassifierChunk;
use crate::kernels::dropout::Dropout;
use crate::kernels::gradnorm::GradNorm;
use crate::model::bert::graph::{
    check_inputs, record_class_backward, record_class_forward, record_embedding, record_encoder,
    record_encoder_backward, record_mlm_backward, record_mlm_forward, BertActs,
};
use crate::model::bert::params::{bert_params, BertTensors};
use crate::model::bert::{Bert, Head};
use crate::model::gpt2::{MemoryReport, OptimConfig, StepConfig};
use crate::model::optim::{record_update, slots};
use crate::model::step::{mean_loss, MicroCopy, Recorded, StepDropout, StepReplay};

/// K micro-batches of B rows × T positions: ids, token types, attention mask (K·B·T
/// each), and targets: K·B·T masked-LM targets or K·B labels (-100 = not counted).
pub struct BertBatchRef<'a> {
    pub ids: &'a [i32],
    pub types: &'a [i32],
    pub mask: &'a [i32],
    pub targets: &'a [i32],
}

/// Everything a BERT run keeps on the device, and its recorded step.
pub struct BertTrainer {
    pub model: Bert,
    pub acts: BertActs,
    pub dacts: BertActs,
    pub grads: BertTensors,
    pub m: BertTensors,
    pub v: BertTensors,
    pub opt: OptimConfig,
    pub grad_accum: usize,
    /// The global gradient norm and clip scale of the last step.
    pub gradnorm: GradNorm,
    micro_ids: Tensor,   // (K, B, T) i32
    micro_types: Tensor, // (K, B, T) i32
    micro_mask: Tensor,  // (K, B, T) i32
    micro_pad: Tensor,   // (K, B, T) i32: 1 - mask
    micro_tgt: Tensor,   // (K, B, T) or (K, B) i32
    /// forward + head loss, zero grads, micro-batch (dropout, 1/K), its exact twin
    /// (without either) when it has one, clip + AdamW; replayed by `model::step`
    replay: StepReplay,
    dropout: StepDropout,
    /// AdamW steps taken.
    pub step: u32,
}

fn loss_stats(a: &BertActs) -> &Tensor {
    match (&a.mlm, &a.class) {
        (Some(m), _) => &m.loss_stats,
        (_, Some(c)) => &c.loss_stats,
        _ => unreachable!("a trainer's model has a head"),
    }
}

fn targets(a: &BertActs) -> &Tensor {
    match (&a.mlm, &a.class) {
        (Some(m), _) => &m.targets,
        (_, Some(c)) => &c.labels,
        _ => unreachable!("a trainer's model has a head"),
    }
}

impl BertTrainer {
    /// A trainer for micro-batches of B rows × T positions, K micro-batches per step;
    /// masked-LM logits whole unless they would be large ([`ClassifierChunk::Auto`]).
    pub fn new(
        ctx: &GpuContext,
        model: Bert,
        bt: (usize, usize),
        opt: OptimConfig,
        grad_accum: usize,
    ) -> Result<Self> {
        Self::with_classifier(ctx, model, bt, opt, grad_accum, ClassifierChunk::Auto)
    }

    /// [`new`](Self::new) with the masked-LM decoder and loss as `chunk` makes them:
    /// whole logits, or fused and chunked over the vocabulary.
    pub fn with_classifier(
        ctx: &GpuContext,
        model: Bert,
        bt: (usize, usize),
        opt: OptimConfig,
        grad_accum: usize,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        let config = StepConfig {
            grad_accum,
            classifier_chunk: chunk,
            ..StepConfig::default()
        };
        Self::with_config(ctx, model, bt, opt, config)
    }

    /// A trainer with accumulation, dropout and the masked-LM decoder as `config` says
    /// (its loss scaler is unused: BERT trains in f32). Dropout is Hugging Face's hidden
    /// dropout ([`record_encoder`]) and the classifier's on the pooled vector, never at
    /// evaluation; its masks follow from `config.seed` and the micro-step, so a resumed
    /// run draws the masks of one that never stopped.
    pub fn with_config(
        ctx: &GpuContext,
        model: Bert,
        (b, t): (usize, usize),
        opt: OptimConfig,
        config: StepConfig,
    ) -> Result<Self> {
        let (k, chunk) = (config.grad_accum, config.classifier_chunk);
        if k == 0 {
            return Err(Error::Invalid(
                "gradient accumulation needs at least one micro-batch per step".into(),
            ));
        }
        if model.head == Head::None {
            return Err(Error::Invalid(
                "a BERT without a head has no loss to train: add a masked-LM head or a classifier"
                    .into(),
            ));
        }
        let cfg = model.config.clone();
        let acts = BertActs::with_classifier(ctx, &model, b, t, "act.", chunk)?;
        let dacts = BertActs::gradients(ctx, &model, b, t, chunk)?;
        let grads = BertTensors::new(ctx, &cfg, model.head, "grad", None)?;
        let m = BertTensors::new(ctx, &cfg, model.head, "adam.m", None)?;
        let v = BertTensors::new(ctx, &cfg, model.head, "adam.v", None)?;
        let gradnorm = GradNorm::new(ctx, &grads.all())?;
        let adam_step = AdamwStep::tensor(ctx, "adamw step")?;
        let i32t = |label: &str, shape: &[usize]| Tensor::zeros(ctx, label, shape, DType::I32);
        let tgt_shape: Vec<usize> = if model.head == Head::Mlm {
            vec![k, b, t]
        } else {
            vec![k, b]
        };
        let micro_ids = i32t("micro ids", &[k, b, t])?;
        let micro_types = i32t("micro types", &[k, b, t])?;
        let micro_mask = i32t("micro mask", &[k, b, t])?;
        let micro_pad = i32t("micro pad", &[k, b, t])?;
        let micro_tgt = i32t("micro targets", &tgt_shape)?;
        let dropout = StepDropout::new(ctx, k, config.dropout, config.seed)?;
        let head_forward = |s: &mut Schedule, dropout: Option<&Dropout>| match model.head {
            Head::Mlm => record_mlm_forward(s, ctx, &model, &acts),
            _ => record_class_forward(s, ctx, &model, &acts, dropout),
        };
        let mut forward = Schedule::new("bert forward");
        record_encoder(&mut forward, ctx, &model, &acts, None)?;
        head_forward(&mut forward, None)?;
        let mut zero_grads = Schedule::new("zero grads");
        for g in grads.all() {
            zero_grads.clear(g);
        }
        let record_micro = |label: &str, scale: f32, dropout: Option<&Dropout>| {
            let mut s = Schedule::new(label);
            for g in dacts.floats() {
                s.clear(g);
            }
            record_encoder(&mut s, ctx, &model, &acts, dropout)?;
            head_forward(&mut s, dropout)?;
            match model.head {
                Head::Mlm => {
                    record_mlm_backward(&mut s, ctx, &model, &grads, &acts, &dacts, scale)?
                }
                _ => record_class_backward(
                    &mut s, ctx, &model, &grads, &acts, &dacts, scale, dropout,
                )?,
            }
            record_encoder_backward(&mut s, ctx, &model, &grads, &acts, &dacts, dropout)?;
            Ok::<_, Error>(s)
        };
        let recorded = dropout.recorded();
        let micro = record_micro("bert micro-batch", 1.0 / k as f32, recorded.as_ref())?;
        let exact = if k > 1 || recorded.is_some() {
            Some(record_micro("bert forward+backward", 1.0, None)?)
        } else {
            None
        };
        let decay = bert_params(&cfg, model.head)
            .into_iter()
            .map(|p| p.spec.decay);
        let slots = slots(model.params.all(), grads.all(), m.all(), v.all(), decay);
        let update = record_update(ctx, &opt, &gradnorm, &adam_step, &slots, None)?;
        let recorded = Recorded {
            forward,
            zero_grads,
            micro,
            exact,
            update,
        };
        let replay = StepReplay::new(ctx, k, recorded, adam_step, loss_stats(&acts))?;
        Ok(BertTrainer {
            model,
            acts,
            dacts,
            grads,
            m,
            v,
            opt,
            grad_accum: k,
            gradnorm,
            micro_ids,
            micro_types,
            micro_mask,
            micro_pad,
            micro_tgt,
            replay,
            dropout,
            step: 0,
        })
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.acts.b, self.acts.t)
    }

    pub fn memory(&self, ctx: &GpuContext) -> MemoryReport {
        let mut params = self.model.params.all();
        params.push(&self.model.zero_pe);
        let moments: Vec<&Tensor> = self.m.all().into_iter().chain(self.v.all()).collect();
        let mut acts = self.acts.all();
        acts.extend(self.dacts.all());
        acts.extend([
            &self.micro_ids,
            &self.micro_types,
            &self.micro_mask,
            &self.micro_pad,
            &self.micro_tgt,
        ]);
        acts.extend(self.dropout.tensors());
        let mut report = MemoryReport::of(ctx, &params, &self.grads.all(), &moments, &acts);
        report.activations += self.replay.bytes();
        report
    }

    fn check(&self, batch: &BertBatchRef, k: usize) -> Result<()> {
        let (b, t) = self.shape();
        let want_tgt = if self.model.head == Head::Mlm {
            k * b * t
        } else {
            k * b
        };
        if batch.targets.len() != want_tgt {
            return Err(Error::Invalid(format!(
                "targets: {} values, expected {want_tgt}",
                batch.targets.len()
            )));
        }
        let n_out = if self.model.head == Head::Mlm {
            self.model.config.vocab_size
        } else {
            self.model
                .params
                .classifier
                .as_ref()
                .map_or(0, |c| c.b.numel())
        };
        if let Some(i) = batch
            .targets
            .iter()
            .position(|&y| y != -100 && (y < 0 || y as usize >= n_out))
        {
            return Err(Error::Invalid(format!(
                "target {} at {i} is outside 0..{n_out} (or -100)",
                batch.targets[i]
            )));
        }
        Ok(())
    }

    fn write_one(&self, ctx: &GpuContext, batch: &BertBatchRef) -> Result<()> {
        self.check(batch, 1)?;
        self.acts
            .write_inputs(ctx, &self.model, batch.ids, batch.types, batch.mask)?;
        targets(&self.acts).write(ctx, batch.targets)
    }

    /// Mean loss of one micro-batch without touching gradients or weights. One submit.
    pub async fn eval_loss(&self, ctx: &GpuContext, batch: &BertBatchRef<'_>) -> Result<f32> {
        self.write_one(ctx, batch)?;
        self.replay.eval(ctx).await
    }

    /// The classifier's logits (B, NL) of one batch (after `eval_loss`'s forward).
    pub async fn class_logits(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        match &self.acts.class {
            Some(c) => c.logits.read_f32(ctx).await,
            None => Err(Error::Invalid("the model has no classifier".into())),
        }
    }

    /// Forward and backward of one micro-batch, unscaled, into freshly zeroed gradients.
    pub async fn forward_backward(
        &self,
        ctx: &GpuContext,
        batch: &BertBatchRef<'_>,
    ) -> Result<f32> {
        self.write_one(ctx, batch)?;
        self.replay.forward_backward(ctx).await
    }

    /// One training step at `lr` on K micro-batches; returns the mean of their losses.
    pub async fn step(
        &mut self,
        ctx: &GpuContext,
        batch: &BertBatchRef<'_>,
        lr: f32,
    ) -> Result<f32> {
        let (k, (b, t)) = (self.grad_accum, self.shape());
        let pad = check_inputs(
            &self.model.config,
            batch.ids,
            batch.types,
            batch.mask,
            k * b * t,
        )?;
        self.check(batch, k)?;
        self.micro_ids.write(ctx, batch.ids)?;
        self.micro_types.write(ctx, batch.types)?;
        self.micro_mask.write(ctx, batch.mask)?;
        self.micro_pad.write(ctx, &pad)?;
        self.micro_tgt.write(ctx, batch.targets)?;
        let row = (b * t * 4) as u64;
        let a = &self.acts;
        let copy = |from, to, bytes| MicroCopy { from, to, bytes };
        let mut copies = vec![
            copy(&self.micro_ids, &a.ids, row),
            copy(&self.micro_types, &a.types, row),
            copy(&self.micro_mask, &a.mask, row),
            copy(&self.micro_pad, &a.pad, row),
            copy(
                &self.micro_tgt,
                targets(a),
                self.micro_tgt.size_bytes() / k as u64,
            ),
        ];
        copies.extend(self.dropout.prepare(ctx, self.step, k)?);
        let losses = self
            .replay
            .step(ctx, &self.opt, lr, self.step + 1, &copies)
            .await?
            .losses;
        self.step += 1;
        Ok(mean_loss(&losses))
    }
}

/// Sentence embeddings with a BERT: mean pooling over the attention mask, then L2
/// normalisation (sentence-transformers' convention), for batches of up to B rows of T.
pub struct Embedder<'m> {
    model: &'m Bert,
    acts: BertActs,
    schedule: Schedule,
    readback: Readback,
}

impl<'m> Embedder<'m> {
    pub fn new(ctx: &GpuContext, model: &'m Bert, b: usize, t: usize) -> Result<Self> {
        let acts = BertActs::new(ctx, model, b, t, "embed.")?;
        let mut schedule = Schedule::new("bert embed");
        record_encoder(&mut schedule, ctx, model, &acts, None)?;
        record_embedding(&mut schedule, ctx, model, &acts)?;
        let readback = Readback::new(ctx, "embeddings", acts.embedding.size_bytes());
        Ok(Embedder {
            model,
            acts,
            schedule,
            readback,
        })
    }

    /// Embed rows of token ids (each at most T, [CLS]/[SEP] included): (rows, C).
    pub async fn embed(&self, ctx: &GpuContext, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let (b, t) = (self.acts.b, self.acts.t);
        let c = self.model.config.hidden_size;
        if rows.len() > b {
            return Err(Error::Invalid(format!(
                "{} rows for an embedder of {b}",
                rows.len()
            )));
        }
        let pad_id = self.model.config.pad_token_id as i32;
        let mut ids = vec![pad_id; b * t];
        let mut mask = vec![0i32; b * t];
        for (r, row) in rows.iter().enumerate() {
            if row.len() > t {
                return Err(Error::Invalid(format!(
                    "row {r} has {} tokens, more than {t}",
                    row.len()
                )));
            }
            for (j, &id) in row.iter().enumerate() {
                ids[r * t + j] = id as i32;
                mask[r * t + j] = 1;
            }
        }
        // Rows past the inputs see one (padding) key so attention stays finite.
        for r in rows.len()..b {
            mask[r * t] = 1;
        }
        self.acts
            .write_inputs(ctx, self.model, &ids, &vec![0; b * t], &mask)?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("embed"),
            });
        self.schedule.encode(&mut enc);
        enc.copy_buffer_to_buffer(
            &self.acts.embedding.buffer,
            0,
            &self.readback.buffer,
            0,
            self.readback.size,
        );
        ctx.submit(enc.finish());
        let all: Vec<f32> = self.readback.read(ctx).await?;
        Ok(all.chunks(c).take(rows.len()).map(|r| r.to_vec()).collect())
    }
}
