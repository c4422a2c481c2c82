//! One encoder–decoder training step as one submit, as GPT-2's `Trainer`: the K
//! micro-batches of a step are uploaded together; the encoder replays, for each, buffer
//! copies of its slice into the activations' inputs, the recorded zero → forward → loss →
//! backward (scaled 1/K), and a copy of its loss stats; then clipping and AdamW once.
//! Only the K loss stats are read back. Dropout as `graph::record_forward_dropout` says,
//! its masks fixed by the seed and the micro-step, as GPT-2's.

use crate::error::{Error, Result};
use crate::gpu::{DType, GpuContext, Schedule, Tensor};
use crate::kernels::adamw::AdamwStep;
use crate::kernels::classifier::ClassifierChunk;
use crate::kernels::dropout::Dropout;
use crate::kernels::gradnorm::GradNorm;
use crate::model::gpt2::{MemoryReport, OptimConfig, StepConfig};
use crate::model::optim::{record_update, slots};
use crate::model::seq2seq::graph::{
    check_batch, record_backward, record_forward, record_forward_dropout, record_loss, Seq2seqActs,
};
use crate::model::seq2seq::params::{seq2seq_params, Seq2seqTensors};
use crate::model::seq2seq::Seq2seq;
use crate::model::step::{mean_loss, MicroCopy, Recorded, StepDropout, StepReplay};

/// One batch of K·B rows: sources (K·B·S) with their padding flags, targets (K·B·T).
pub struct Seq2seqBatchRef<'a> {
    pub src: &'a [i32],
    pub src_pad: &'a [i32],
    pub tgt_in: &'a [i32],
    pub tgt_out: &'a [i32],
}

/// Everything a training run keeps on the device for one (B, S, T), and the recorded step.
pub struct Seq2seqTrainer {
    pub model: Seq2seq,
    pub acts: Seq2seqActs,
    pub dacts: Seq2seqActs,
    pub grads: Seq2seqTensors,
    pub m: Seq2seqTensors,
    pub v: Seq2seqTensors,
    pub gradnorm: GradNorm,
    pub opt: OptimConfig,
    pub grad_accum: usize,
    micro_src: Tensor, // (K, B, S) i32
    micro_pad: Tensor, // (K, B, S) i32
    micro_in: Tensor,  // (K, B, T) i32
    micro_out: Tensor, // (K, B, T) i32
    /// forward + loss, zero grads, micro-batch (dropout, 1/K), its exact twin (without
    /// either) when it has one, clip + AdamW; replayed by `model::step`
    replay: StepReplay,
    dropout: StepDropout,
    /// AdamW steps taken.
    pub step: u32,
}

impl Seq2seqTrainer {
    /// A trainer for micro-batches of B rows, sources of S and targets of T tokens, K
    /// micro-batches per step; logits whole unless they would be large
    /// ([`ClassifierChunk::Auto`]).
    pub fn new(
        ctx: &GpuContext,
        model: Seq2seq,
        bst: (usize, usize, usize),
        opt: OptimConfig,
        grad_accum: usize,
    ) -> Result<Self> {
        Self::with_classifier(ctx, model, bst, opt, grad_accum, ClassifierChunk::Auto)
    }

    /// [`new`](Self::new) with the output projection and loss as `chunk` makes them:
    /// whole logits, or fused and chunked over the target vocabulary.
    pub fn with_classifier(
        ctx: &GpuContext,
        model: Seq2seq,
        bst: (usize, usize, usize),
        opt: OptimConfig,
        grad_accum: usize,
        chunk: ClassifierChunk,
    ) -> Result<Self> {
        let config = StepConfig {
            grad_accum,
            classifier_chunk: chunk,
            ..StepConfig::default()
        };
        Self::with_config(ctx, model, bst, opt, config)
    }

    /// A trainer with accumulation, dropout and the output projection as `config` says
    /// (its loss scaler is unused: this model trains in f32). Dropout is never applied
    /// at evaluation; its masks follow from `config.seed` and the micro-step, so a
    /// resumed run draws the masks of one that never stopped.
    pub fn with_config(
        ctx: &GpuContext,
        model: Seq2seq,
        (b, s, t): (usize, usize, usize),
        opt: OptimConfig,
        config: StepConfig,
    ) -> Result<Self> {
        let (k, chunk) = (config.grad_accum, config.classifier_chunk);
        if k == 0 {
            return Err(Error::Invalid(
                "gradient accumulation needs at least one micro-batch per step".into(),
            ));
        }
        let cfg = model.config.clone();
        let acts = Seq2seqActs::with_classifier(ctx, &cfg, b, s, t, "act.", chunk)?;
        let dacts = Seq2seqActs::gradients(ctx, &cfg, (b, s, t), chunk)?;
        let grads = Seq2seqTensors::new(ctx, &cfg, "grad", None)?;
        let m = Seq2seqTensors::new(ctx, &cfg, "adam.m", None)?;
        let v = Seq2seqTensors::new(ctx, &cfg, "adam.v", None)?;
        let gradnorm = GradNorm::new(ctx, &grads.all())?;
        let adam_step = AdamwStep::tensor(ctx, "adamw step")?;
        let i32t = |label: &str, n: usize| Tensor::zeros(ctx, label, &[k, b, n], DType::I32);
        let micro_src = i32t("micro src", s)?;
        let micro_pad = i32t("micro src_pad", s)?;
        let micro_in = i32t("micro tgt_in", t)?;
        let micro_out = i32t("micro tgt_out", t)?;
        let dropout = StepDropout::new(ctx, k, config.dropout, config.seed)?;

        let mut forward = Schedule::new("seq2seq forward");
        record_forward(&mut forward, ctx, &model, &acts)?;
        record_loss(&mut forward, ctx, &cfg, &acts)?;
        let mut zero_grads = Schedule::new("zero grads");
        for g in grads.all() {
            zero_grads.clear(g);
        }
        let record_micro = |label: &str, scale: f32, dropout: Option<&Dropout>| {
            let mut s = Schedule::new(label);
            for g in dacts.floats() {
                s.clear(g);
            }
            record_forward_dropout(&mut s, ctx, &model, &acts, dropout)?;
            record_loss(&mut s, ctx, &cfg, &acts)?;
            record_backward(&mut s, ctx, &model, &grads, &acts, &dacts, scale, dropout)?;
            Ok::<_, Error>(s)
        };
        let recorded = dropout.recorded();
        let micro = record_micro("seq2seq micro-batch", 1.0 / k as f32, recorded.as_ref())?;
        let exact = if k > 1 || recorded.is_some() {
            Some(record_micro("seq2seq forward+backward", 1.0, None)?)
        } else {
            None
        };
        let decay = seq2seq_params(&cfg).into_iter().map(|p| p.spec.decay);
        let slots = slots(model.params.all(), grads.all(), m.all(), v.all(), decay);
        let update = record_update(ctx, &opt, &gradnorm, &adam_step, &slots, None)?;
        let recorded = Recorded {
            forward,
            zero_grads,
            micro,
            exact,
            update,
        };
        let replay = StepReplay::new(ctx, k, recorded, adam_step, &acts.loss_stats)?;
        Ok(Seq2seqTrainer {
            model,
            acts,
            dacts,
            grads,
            m,
            v,
            gradnorm,
            opt,
            grad_accum: k,
            micro_src,
            micro_pad,
            micro_in,
            micro_out,
            replay,
            dropout,
            step: 0,
        })
    }

    /// (B, S, T) of one micro-batch.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.acts.b, self.acts.s, self.acts.t)
    }

    pub fn memory(&self, ctx: &GpuContext) -> MemoryReport {
        let mut params = self.model.params.all();
        params.push(&self.model.pe);
        let moments: Vec<&Tensor> = self.m.all().into_iter().chain(self.v.all()).collect();
        let mut acts = self.acts.all();
        acts.extend(self.dacts.all());
        acts.extend([
            &self.micro_src,
            &self.micro_pad,
            &self.micro_in,
            &self.micro_out,
        ]);
        acts.extend(self.dropout.tensors());
        let mut report = MemoryReport::of(ctx, &params, &self.grads.all(), &moments, &acts);
        report.activations += self.replay.bytes();
        report
    }

    fn write_one(&self, ctx: &GpuContext, batch: &Seq2seqBatchRef) -> Result<()> {
        let cfg = &self.model.config;
        self.acts.write_batch(
            ctx,
            cfg,
            batch.src,
            batch.src_pad,
            batch.tgt_in,
            batch.tgt_out,
        )
    }

    /// Mean loss of one micro-batch, without touching gradients or weights. One submit.
    pub async fn eval_loss(&self, ctx: &GpuContext, batch: &Seq2seqBatchRef<'_>) -> Result<f32> {
        self.write_one(ctx, batch)?;
        self.replay.eval(ctx).await
    }

    /// Forward and backward of one micro-batch without accumulation scaling: its mean
    /// loss's gradient lands in `self.grads` (zeroed first); returns the loss. The
    /// logits are overwritten by their gradient. One submit.
    pub async fn forward_backward(
        &self,
        ctx: &GpuContext,
        batch: &Seq2seqBatchRef<'_>,
    ) -> Result<f32> {
        self.write_one(ctx, batch)?;
        self.replay.forward_backward(ctx).await
    }

    /// One training step at learning rate `lr` on K micro-batches (micro-batch k at rows
    /// [k·B, (k+1)·B) of each array): returns the mean of their losses (before the update).
    pub async fn step(
        &mut self,
        ctx: &GpuContext,
        batch: &Seq2seqBatchRef<'_>,
        lr: f32,
    ) -> Result<f32> {
        let (k, (b, s, t)) = (self.grad_accum, self.shape());
        check_batch(
            &self.model.config,
            batch.src,
            batch.src_pad,
            batch.tgt_in,
            Some(batch.tgt_out),
            k,
            b,
            s,
            t,
        )?;
        self.micro_src.write(ctx, batch.src)?;
        self.micro_pad.write(ctx, batch.src_pad)?;
        self.micro_in.write(ctx, batch.tgt_in)?;
        self.micro_out.write(ctx, batch.tgt_out)?;
        let (src_row, tgt_row) = ((b * s * 4) as u64, (b * t * 4) as u64);
        let copy = |from, to, bytes| MicroCopy { from, to, bytes };
        let mut copies = vec![
            copy(&self.micro_src, &self.acts.src, src_row),
            copy(&self.micro_pad, &self.acts.src_pad, src_row),
            copy(&self.micro_in, &self.acts.tgt_in, tgt_row),
            copy(&self.micro_out, &self.acts.tgt_out, tgt_row),
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
