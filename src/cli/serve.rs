//! `wgformer serve` (being written).

use crate::error::{Error, Result};
use crate::gpu::GpuOptions;

/// Flags of `wgformer serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {}

pub fn run(_opts: &GpuOptions, _args: Args) -> Result<bool> {
    Err(Error::Invalid("wgformer serve is being written".into()))
}
