//! The learning-rate schedule: linear warmup, then cosine decay to a minimum, then the
//! minimum, exactly as nanoGPT's `get_lr`. A pure function of the step, so a resumed run
//! needs no schedule state.

use serde::{Deserialize, Serialize};

/// Warmup then cosine decay (nanoGPT's `get_lr`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate, reached at the end of warmup.
    pub lr: f32,
    /// Floor of the cosine decay.
    pub min_lr: f32,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// Step at which the cosine reaches `min_lr` (nanoGPT's `lr_decay_iters`).
    pub decay_steps: u64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f32) -> Self {
        LrSchedule {
            lr,
            min_lr: lr,
            warmup_steps: 0,
            decay_steps: 0,
        }
    }

    /// The learning rate of step `it` (counted from 0):
    /// `lr·(it+1)/(warmup+1)` during warmup, `min_lr` after `decay_steps`, and in
    /// between `min_lr + ½(1 + cos(π·r))·(lr − min_lr)` with r the fraction of the decay
    /// done. Computed in f64, rounded once.
    pub fn at(&self, it: u64) -> f32 {
        let (lr, min_lr) = (self.lr as f64, self.min_lr as f64);
        if it < self.warmup_steps {
            return (lr * (it + 1) as f64 / (self.warmup_steps + 1) as f64) as f32;
        }
        if it > self.decay_steps || self.decay_steps <= self.warmup_steps {
            return self.min_lr;
        }
        let ratio = (it - self.warmup_steps) as f64 / (self.decay_steps - self.warmup_steps) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        (min_lr + coeff * (lr - min_lr)) as f32
    }
}
