//! Inference: a model with its tokenizer ([`Model`]), KV-cached generation with sampling
//! on the GPU ([`Generator`], [`TokenStream`], built on [`decoder::Decoder`]), perplexity
//! ([`eval::Evaluator`]) and an HTTP server with the OpenAI completions API
//! ([`server`], native only). Library calls are `async` and never block; the CLI and the
//! server's worker thread drive them with `GpuContext::block_on`.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use wgformer::infer::{GenerateOptions, Generator, Model};
//! # fn main() -> wgformer::Result<()> {
//! let opts = wgformer::gpu::GpuOptions::default();
//! let model = Arc::new(pollster::block_on(Model::load("gpt2".as_ref(), &opts))?);
//! let ctx = model.ctx.clone();
//! let mut gen = Generator::new(model.clone())?;
//! let prompt = model.encode("Hello")?;
//! let mut stream = gen.stream(&prompt, &GenerateOptions::default())?;
//! while let Some(token) = ctx.block_on(stream.next())? {
//!     print!("{}", token.text);
//! }
//! # Ok(())
//! # }
//! ```

pub mod decoder;
pub mod embed;
pub mod eval;
pub mod generator;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
pub mod translate;

pub use generator::{
    Completion, FinishReason, GenerateOptions, GenerateStats, Generator, Token, TokenStream,
};
pub use model::Model;
