//! CPU references: plain, obviously correct Rust for every kernel, with the kernel's name
//! and argument order (outputs, inputs, dimensions). Tests compare the GPU against these;
//! the references' own gradients are checked by finite differences. Speed is not a goal.

pub mod elementwise;
pub mod matmul;
