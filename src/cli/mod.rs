//! The command line's subcommands that do real work, one module each: their clap
//! `Args` and a `run` that blocks at the edge. `src/main.rs` wires them together with
//! the small commands (info, selfcheck, bench, parity). Native only.

pub mod bert;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod seq2seq;
pub mod serve;
pub mod train;
pub mod web;
