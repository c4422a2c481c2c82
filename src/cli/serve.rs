//! `wgformer serve`: an HTTP server for one model with the OpenAI completions API
//! (`POST /v1/completions`, `GET /v1/models`, `GET /health`); see `infer::server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::infer::server::{spawn, ServerConfig};
use crate::infer::Model;

/// Flags of `wgformer serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Checkpoint: a directory with config.json and model.safetensors, or the
    /// .safetensors file itself.
    #[arg(long)]
    pub model: PathBuf,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Requests that may wait for the GPU; more are answered 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// The model's id in the API; the checkpoint directory's name by default.
    #[arg(long)]
    pub model_id: Option<String>,
}

pub fn run(opts: &GpuOptions, args: Args) -> Result<bool> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| Error::Invalid(format!("--host {} --port {}: {e}", args.host, args.port)))?;
    let model = Arc::new(pollster::block_on(Model::load(&args.model, opts))?);
    let cfg = ServerConfig {
        addr,
        queue: args.queue,
        model_id: args.model_id.clone(),
    };
    let server = spawn(model.clone(), cfg)?;
    eprintln!(
        "serving {} on http://{} ({}; context {}, queue {})",
        args.model_id.as_deref().unwrap_or(&model.name),
        server.addr(),
        model.ctx.adapter_name(),
        model.context(),
        args.queue
    );
    server.wait();
    Ok(true)
}
