//! CPU references: plain, obviously correct Rust for every kernel, with the kernel's name
//! and argument order (outputs, inputs, dimensions). They compute in f64, so they are a
//! better answer than the kernels rather than a copy of their rounding, and so that
//! their own gradients can be checked by finite differences (`testing::check_gradient`).
//! Backward references follow the kernels' convention: gradients are added into (`+=`).
//! Speed is not a goal.

pub mod adamw;
pub mod attention;
pub mod cast;
pub mod crossentropy;
pub mod decode;
pub mod dropout;
pub mod elementwise;
pub mod encoder;
pub mod gelu;
pub mod gradnorm;
pub mod layernorm;
pub mod lossscale;
pub mod matmul;
pub mod mha;
pub mod pool;
pub mod relu;
pub mod residual;
pub mod sampling;
pub mod tanh;
