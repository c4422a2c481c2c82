//! `wgformer web`: serve the browser demo that `scripts/build-web` assembles in
//! `target/web` (the page from `assets/web/`, its WebAssembly, the shipped model and the
//! training text) over HTTP on localhost. Any static file server does the same; this one
//! needs nothing installed.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Flags of `wgformer web`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on. WebGPU needs a secure context: localhost, or https.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The built site (scripts/build-web writes it).
    #[arg(long, default_value = "target/web")]
    pub dir: PathBuf,
}

pub fn run(args: Args) -> Result<bool> {
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .map_err(|e| Error::Invalid(format!("--host {} --port {}: {e}", args.host, args.port)))?;
    for needed in [
        "index.html",
        "pkg/wgformer_web.js",
        "pkg/wgformer_web_bg.wasm",
    ] {
        if !args.dir.join(needed).is_file() {
            return Err(Error::Invalid(format!(
                "--dir {}: no {needed}; build the page first with scripts/build-web",
                args.dir.display()
            )));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Invalid(format!("starting the HTTP runtime: {e}")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::Invalid(format!("--host {} --port {}: {e}", args.host, args.port))
        })?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Invalid(format!("listening on {addr}: {e}")))?;
        eprintln!(
            "serving the demo in {} on http://{local}/ (open it in a browser with WebGPU)",
            args.dir.display()
        );
        let app =
            axum::Router::new().fallback_service(tower_http::services::ServeDir::new(&args.dir));
        axum::serve(listener, app)
            .await
            .map_err(|e| Error::Invalid(format!("serving on {local}: {e}")))
    })?;
    Ok(true)
}
