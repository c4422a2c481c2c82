//! Models built from the kernels: configuration, parameter layout, checkpoints.

pub mod bert;
pub mod blocks;
pub mod checkpoint;
pub mod config;
pub mod gpt2;
pub mod half;
pub mod optim;
pub mod params;
pub mod seq2seq;
pub mod step;
pub mod tensors;

pub use config::Gpt2Config;
