//! wgformer: transformer language models whose forward and backward passes are WGSL
//! compute shaders, scheduled from Rust through wgpu on Vulkan, Metal, DX12, GL and
//! WebGPU.
//!
//! - [`gpu`]: adapter and device, tensors, pipeline cache, scheduler, buffer planning.
//! - [`kernels`]: one launcher per WGSL entry point (`shaders/<family>.wgsl`).
//! - [`reference`]: the CPU twin of every kernel, same names, same argument order.
//! - [`testing`]: `assert_close` and the adapter choice of GPU tests.
//!
//! Dimension letters used in shape comments: B batch, T time (sequence), C channels,
//! NH heads, HS head size (C / NH), V vocabulary, L layers; M, N, K for a matmul's
//! rows, columns and reduction.

// Models and devices are shared through `Arc` for the native server's threads; in the
// browser, wgpu's objects are not `Send`, and the same `Arc`s just count references.
#![cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod error;
pub mod gpu;
pub mod infer;
pub mod kernels;
pub mod model;
pub mod parity;
pub mod reference;
pub mod rng;
pub mod selfcheck;
pub mod testing;
pub mod tokenizer;
#[cfg(not(target_arch = "wasm32"))]
pub mod train;

pub use error::{Error, Result};
