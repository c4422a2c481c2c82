//! Perplexity of a model over a token sequence. The sequence is cut into windows of T
//! positions that start every `stride` tokens; each window predicts its targets (the
//! next tokens) from the tokens before them in the window, and each target of the
//! sequence is counted in exactly one window, the first that reaches it (positions an
//! earlier window already scored get the ignore target -100). With stride = T the windows
//! do not overlap; a smaller stride gives every target more context, as Hugging Face's
//! perplexity guide describes. The forward pass and the loss are the training kernels',
//! recorded once for (B, T) and replayed with one submit per B windows, reading back the
//! summed loss and the count only.

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Readback, Schedule, Slot};
use crate::kernels::classifier::ClassifierChunk;
use crate::kernels::crossentropy::{IGNORE_INDEX, STATS_LEN};
use crate::model::gpt2::{record_forward, record_loss, Activations, Gpt2};

/// One window: inputs and targets (T each; -100 = not scored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub x: Vec<i32>,
    pub y: Vec<i32>,
}

/// The windows of `t` positions every `stride` tokens that score each target of `tokens`
/// (tokens 1..N) once. Short windows are padded with token 0 and target -100.
pub fn windows(tokens: &[u32], t: usize, stride: usize) -> Result<Vec<Window>> {
    let n = tokens.len();
    if n < 2 {
        return Err(Error::Invalid(format!(
            "perplexity needs at least 2 tokens (one to predict from, one to predict), got {n}"
        )));
    }
    if t == 0 || stride == 0 || stride > t {
        return Err(Error::Invalid(format!(
            "--context {t} and --stride {stride}: need 1 ≤ stride ≤ context"
        )));
    }
    let mut out = Vec::new();
    let mut scored = 0; // targets 1..=scored are counted
    let mut start = 0;
    while scored < n - 1 {
        let mut x = vec![0i32; t];
        let mut y = vec![IGNORE_INDEX; t];
        for j in 0..t {
            let target = start + j + 1;
            if target >= n {
                break;
            }
            x[j] = tokens[start + j] as i32;
            if target > scored {
                y[j] = tokens[target] as i32;
            }
        }
        scored = (start + t).min(n - 1);
        out.push(Window { x, y });
        start += stride;
    }
    Ok(out)
}

/// Mean loss and perplexity over the scored targets.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Targets scored.
    pub tokens: usize,
    pub windows: usize,
    /// Mean cross-entropy per scored target, in nats.
    pub mean_loss: f64,
    /// exp(mean_loss).
    pub perplexity: f64,
}

/// A forward pass and the loss recorded once for B windows of T positions.
pub struct Evaluator {
    b: usize,
    t: usize,
    vocab: usize,
    acts: Activations,
    pass: Schedule,
    readback: Readback,
}

impl Evaluator {
    pub fn new(ctx: &GpuContext, model: &Gpt2, b: usize, t: usize) -> Result<Self> {
        // Only the loss is read: large logits are chunked, never whole.
        let chunk = ClassifierChunk::Auto;
        let acts = Activations::with_classifier(ctx, &model.config, b, t, "eval.", chunk)?;
        let mut pass = Schedule::new("eval");
        record_forward(&mut pass, ctx, model, &acts)?;
        record_loss(&mut pass, ctx, &model.config, &acts)?;
        let readback = Readback::new(ctx, "eval loss", (STATS_LEN * 4) as u64);
        pass.copy(
            (&acts.loss_stats).into(),
            Slot::from_readback(&readback),
            readback.size,
        );
        Ok(Evaluator {
            b,
            t,
            vocab: model.config.vocab_size,
            acts,
            pass,
            readback,
        })
    }

    /// (Σ loss, scored targets) of up to B windows in one submit; missing windows are
    /// padding with nothing scored.
    pub async fn windows_loss(&self, ctx: &GpuContext, ws: &[Window]) -> Result<(f64, usize)> {
        assert!(
            ws.len() <= self.b,
            "eval: {} windows for B = {}",
            ws.len(),
            self.b
        );
        let mut x = vec![0i32; self.b * self.t];
        let mut y = vec![IGNORE_INDEX; self.b * self.t];
        for (i, w) in ws.iter().enumerate() {
            x[i * self.t..(i + 1) * self.t].copy_from_slice(&w.x);
            y[i * self.t..(i + 1) * self.t].copy_from_slice(&w.y);
        }
        self.acts.write_batch(ctx, self.vocab, &x, Some(&y))?;
        self.pass.run(ctx);
        let stats: Vec<f32> = self.readback.read(ctx).await?;
        // [mean, count, 1/count, sum]
        Ok((stats[3] as f64, stats[1] as usize))
    }

    /// Perplexity of `tokens` with windows of T every `stride` tokens; `progress(done,
    /// total)` is called after each batch of windows.
    pub async fn evaluate(
        &self,
        ctx: &GpuContext,
        tokens: &[u32],
        stride: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<EvalReport> {
        let ws = windows(tokens, self.t, stride)?;
        let (mut sum, mut count) = (0f64, 0usize);
        for (i, batch) in ws.chunks(self.b).enumerate() {
            let (s, c) = self.windows_loss(ctx, batch).await?;
            sum += s;
            count += c;
            progress((i * self.b + batch.len()).min(ws.len()), ws.len());
        }
        let mean_loss = sum / count.max(1) as f64;
        Ok(EvalReport {
            tokens: count,
            windows: ws.len(),
            mean_loss,
            perplexity: mean_loss.exp(),
        })
    }
}
