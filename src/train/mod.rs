//! Training from the command line's point of view, as a library: collect and read text,
//! tokenize it once into a cache, pretrain a GPT-2 on it, fine-tune one on prompt →
//! completion pairs, with evaluation, a metrics log, a loss plot, atomic checkpoints and
//! bit-exact resume. The GPU work is the model's (`model::gpt2::Trainer`, one submit per
//! step); this module decides what each step sees and keeps the record.
//!
//! - [`data`]: corpora, the token cache, pretraining and fine-tuning batches.
//! - [`tokenize`]: char, byte, GPT-2 and trained BPE tokenizers, normalization.
//! - [`pairs`]: seq2seq source → target pairs, tokenizers with `<pad>`/`<s>`/`</s>`, batches.
//! - [`mlm`]: BERT special ids, masked-LM batches (`[CLS]` window `[SEP]`, 80/10/10 masking).
//! - [`classify`]: labeled text for sequence classification, its label set and batches.
//! - [`tasks`]: generated toy seq2seq tasks (reverse, sort, copy).
//! - [`schedule`]: warmup then cosine decay of the learning rate.
//! - [`state`]: the run directory, checkpoints, resume.
//! - [`metrics`]: `metrics.jsonl` and `loss.svg`.
//! - [`run`]: planning a run and the training loop.
//! - [`progress`]: the progress bar the CLI shows.
//! - [`sample`]: the text sample printed at the end of a run.

pub mod bert;
pub mod classify;
pub mod data;
pub mod driver;
pub mod metrics;
pub mod mlm;
pub mod pairs;
pub mod progress;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod seq2seq;
pub mod state;
pub mod tasks;
pub mod tokenize;

pub use run::{
    plan_finetuning, plan_pretraining, plan_resume, train, FinetuneOptions, ModelChoice, Observer,
    Outcome, Plan, PretrainOptions, RunKind, RunSpec, Silent, TrainSettings,
};
pub use schedule::LrSchedule;
