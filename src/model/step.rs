//! The replay of a recorded training step, shared by every trainer (GPT-2, the
//! encoder–decoder, BERT). A trainer records its schedules once — forward + loss,
//! zeroing the parameter gradients, one micro-batch's zero → forward → loss → backward
//! (scaled 1/K), the same unscaled when K > 1, and clip + AdamW — and hands them here
//! with its loss-stats tensor. A step is then one submit: zero the gradients; for each
//! of the K micro-batches, copy its slice of the step's uploaded inputs into the
//! activations' input tensors ([`MicroCopy`]), replay the micro-batch and copy its loss
//! stats into row k of `micro_stats`; then clip + AdamW. Only the K loss stats come back.

use crate::error::Result;
use crate::gpu::{DType, GpuContext, Readback, Schedule, Tensor};
use crate::kernels::adamw::AdamwStep;
use crate::kernels::crossentropy::STATS_LEN;
use crate::kernels::dropout::{check_rate, Dropout, DropoutStep, DROPOUT_STEP_WORDS};
use crate::model::gpt2::OptimConfig;

/// Before micro-batch k's replay, bytes [k·bytes, (k+1)·bytes) of `from` go to the start
/// of `to`.
pub struct MicroCopy<'a> {
    pub from: &'a Tensor,
    pub to: &'a Tensor,
    pub bytes: u64,
}

/// A trainer's dropout: its rate, the seed of its masks, and the buffers the step copies
/// them through. Micro-batch k of optimizer step `step` (counted from 0) draws with
/// counter step·K + k, so a given seed draws the same masks in a run that never stopped
/// and in a resumed one; before its replay, row k of the (K, 4) table is copied into the
/// (4) step buffer the recorded kernels read.
pub struct StepDropout {
    rate: f32,
    seed: u64,
    table: Tensor, // (K, 4) u32: a DropoutStep per micro-batch
    step: Tensor,  // (4) u32: the DropoutStep the kernels read
}

impl StepDropout {
    /// Dropout at `rate` (0: off) for steps of `k` micro-batches, masks from `seed`.
    pub fn new(ctx: &GpuContext, k: usize, rate: f32, seed: u64) -> Result<Self> {
        check_rate(rate)?;
        Ok(StepDropout {
            rate,
            seed,
            table: Tensor::zeros(ctx, "dropout table", &[k, DROPOUT_STEP_WORDS], DType::U32)?,
            step: DropoutStep::tensor(ctx, "dropout step")?,
        })
    }

    /// What a training micro-batch is recorded with; `None` at rate 0.
    pub fn recorded(&self) -> Option<Dropout<'_>> {
        (self.rate > 0.0).then_some(Dropout {
            p: self.rate,
            step: &self.step,
        })
    }

    /// Before optimizer step `step` of `k` micro-batches: stage its table and return the
    /// copy each micro-batch needs (`None` at rate 0).
    pub fn prepare(&self, ctx: &GpuContext, step: u32, k: usize) -> Result<Option<MicroCopy<'_>>> {
        if self.rate == 0.0 {
            return Ok(None);
        }
        let table: Vec<u32> = (0..k)
            .flat_map(|i| {
                let counter = (step as u64 * k as u64 + i as u64) as u32;
                DropoutStep::new(self.seed, counter).words()
            })
            .collect();
        self.table.write(ctx, &table)?;
        Ok(Some(MicroCopy {
            from: &self.table,
            to: &self.step,
            bytes: (DROPOUT_STEP_WORDS * 4) as u64,
        }))
    }

    pub fn tensors(&self) -> [&Tensor; 2] {
        [&self.table, &self.step]
    }
}

/// A trainer's recorded schedules and the buffers their replay needs.
pub struct StepReplay {
    /// K: micro-batches per step.
    pub k: usize,
    /// forward + loss only (evaluation, parity of logits)
    pub forward: Schedule,
    zero_grads: Schedule,
    micro: Schedule,
    /// `micro` without dropout or 1/K scaling, when `micro` has either
    exact: Option<Schedule>,
    update: Schedule,
    adam_step: Tensor,   // (8) u32: the AdamwStep `update` reads
    loss_stats: Tensor,  // (4): the activations' loss stats (shares their buffer)
    micro_stats: Tensor, // (K, 4)
    loss_readback: Readback,
    stats_readback: Readback,
    /// A small tensor read back with every step's losses, after them: the mixed path's
    /// loss-scaler state, whose skip count keeps AdamW's t on the steps it applied.
    tail: Option<Tensor>,
}

/// The schedules a trainer records, as [`StepReplay::new`] takes them.
pub struct Recorded {
    pub forward: Schedule,
    pub zero_grads: Schedule,
    pub micro: Schedule,
    pub exact: Option<Schedule>,
    pub update: Schedule,
}

impl StepReplay {
    /// `adam_step` is the tensor `update` was recorded with; `loss_stats` the (4) stats
    /// tensor the forward writes.
    pub fn new(
        ctx: &GpuContext,
        k: usize,
        r: Recorded,
        adam_step: Tensor,
        loss_stats: &Tensor,
    ) -> Result<Self> {
        let micro_stats = Tensor::zeros(ctx, "micro loss stats", &[k, STATS_LEN], DType::F32)?;
        Ok(StepReplay {
            k,
            forward: r.forward,
            zero_grads: r.zero_grads,
            micro: r.micro,
            exact: r.exact,
            update: r.update,
            adam_step,
            loss_stats: loss_stats.clone(),
            loss_readback: Readback::new(ctx, "loss", (STATS_LEN * 4) as u64),
            stats_readback: Readback::new(ctx, "micro losses", micro_stats.size_bytes()),
            micro_stats,
            tail: None,
        })
    }

    /// Read `tail` (a few f32 words) back with every step's losses, in the same copy-out
    /// and readback ([`StepOutput::tail`]).
    pub fn with_tail(mut self, ctx: &GpuContext, tail: &Tensor) -> Self {
        let bytes = self.micro_stats.size_bytes() + tail.size_bytes();
        self.stats_readback = Readback::new(ctx, "micro losses", bytes);
        self.tail = Some(tail.clone());
        self
    }

    /// Bytes the replay itself holds on the device.
    pub fn bytes(&self) -> u64 {
        self.micro_stats.size_bytes() + self.adam_step.size_bytes()
    }

    async fn run_and_read_loss(&self, ctx: &GpuContext, schedules: &[&Schedule]) -> Result<f32> {
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("train step"),
            });
        for s in schedules {
            s.encode(&mut enc);
        }
        let rb = &self.loss_readback;
        enc.copy_buffer_to_buffer(&self.loss_stats.buffer, 0, &rb.buffer, 0, rb.size);
        ctx.submit(enc.finish());
        let stats: Vec<f32> = rb.read(ctx).await?;
        Ok(stats[0])
    }

    /// The mean loss of the batch in the activations, without touching gradients or
    /// weights. One submit.
    pub async fn eval(&self, ctx: &GpuContext) -> Result<f32> {
        self.run_and_read_loss(ctx, &[&self.forward]).await
    }

    /// Zero the gradients and run forward + backward of the batch in the activations,
    /// unscaled and without dropout; returns its loss. One submit.
    pub async fn forward_backward(&self, ctx: &GpuContext) -> Result<f32> {
        let exact = self.exact.as_ref().unwrap_or(&self.micro);
        self.run_and_read_loss(ctx, &[&self.zero_grads, exact])
            .await
    }

    /// One optimizer step (AdamW's t = `t`) at `lr` over the K micro-batches whose inputs
    /// `copies` bring into place; returns each micro-batch's mean loss, and the tail's
    /// words as the step left them. One submit.
    pub async fn step(
        &self,
        ctx: &GpuContext,
        opt: &OptimConfig,
        lr: f32,
        t: u32,
        copies: &[MicroCopy<'_>],
    ) -> Result<StepOutput> {
        AdamwStep::new(lr, opt.beta1, opt.beta2, opt.eps, t)?.write(ctx, &self.adam_step)?;
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("train step"),
            });
        self.zero_grads.encode(&mut enc);
        let stats = (STATS_LEN * 4) as u64;
        for i in 0..self.k as u64 {
            for c in copies {
                enc.copy_buffer_to_buffer(&c.from.buffer, i * c.bytes, &c.to.buffer, 0, c.bytes);
            }
            self.micro.encode(&mut enc);
            enc.copy_buffer_to_buffer(
                &self.loss_stats.buffer,
                0,
                &self.micro_stats.buffer,
                i * stats,
                stats,
            );
        }
        self.update.encode(&mut enc);
        let rb = &self.stats_readback;
        let stats_bytes = self.micro_stats.size_bytes();
        enc.copy_buffer_to_buffer(&self.micro_stats.buffer, 0, &rb.buffer, 0, stats_bytes);
        if let Some(tail) = &self.tail {
            let bytes = tail.size_bytes();
            enc.copy_buffer_to_buffer(&tail.buffer, 0, &rb.buffer, stats_bytes, bytes);
        }
        ctx.submit(enc.finish());
        let all: Vec<f32> = rb.read(ctx).await?;
        let (stats, tail) = all.split_at(self.k * STATS_LEN);
        Ok(StepOutput {
            losses: stats.chunks(STATS_LEN).map(|s| s[0]).collect(),
            tail: tail.to_vec(),
        })
    }
}

/// What a step reads back: each micro-batch's mean loss, and the words of the replay's
/// tail tensor after the step (empty without one).
pub struct StepOutput {
    pub losses: Vec<f32>,
    pub tail: Vec<f32>,
}

/// The mean of a step's micro-batch losses (the loss itself when K = 1).
pub fn mean_loss(losses: &[f32]) -> f32 {
    if losses.len() == 1 {
        return losses[0];
    }
    (losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len().max(1) as f64) as f32
}
