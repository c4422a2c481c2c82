//! `wgformer train` (being written).

use crate::error::{Error, Result};
use crate::gpu::GpuOptions;

/// Flags of `wgformer train`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {}

pub fn run(_opts: &GpuOptions, _args: Args) -> Result<bool> {
    Err(Error::Invalid("wgformer train is being written".into()))
}
