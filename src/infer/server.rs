//! An HTTP server for one model with the OpenAI completions API, on axum and tokio:
//! `POST /v1/completions` (prompt, max_tokens, temperature, top_p, seed, stop and
//! `stream: true` as server-sent events; top_k as an extension), `GET /v1/models` and
//! `GET /health`. Every error is a 4xx/5xx JSON body in OpenAI's shape
//! (`{"error": {"message", "type", "param", "code"}}`) and the server keeps serving.
//!
//! The HTTP side never touches the GPU. Requests are validated and tokenized there, then
//! queued (a bounded channel; a full queue answers 503) for one worker thread that owns
//! the [`Generator`] and drives the device with `GpuContext::block_on`, one request at a
//! time, so concurrent requests never share the KV cache and each gets exactly the tokens
//! it would get alone. Tokens flow back per request over a channel; a client that goes
//! away ends its generation at the next token.
//!
//! Models without a tokenizer take token-id prompts only, and their text is the
//! generated ids, each written as a space and the decimal id. Every choice also carries
//! the ids as `token_ids` (an extension clients ignore).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::error::{Error, Result};
use crate::infer::generator::{FinishReason, GenerateOptions, Generator, Token};
use crate::infer::model::Model;

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen; port 0 picks a free one (see [`RunningServer::addr`]).
    pub addr: SocketAddr,
    /// Requests that may wait for the worker; more are answered 503.
    pub queue: usize,
    /// The model's id in the API (`model` field); the model's name if `None`.
    pub model_id: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            queue: 64,
            model_id: None,
        }
    }
}

/// Limits of the API that requests are checked against.
const MAX_TEMPERATURE: f32 = 2.0;
const MAX_STOPS: usize = 4;
const DEFAULT_MAX_TOKENS: usize = 16;

/// What the worker sends back for one request.
enum Reply {
    Token(Token),
    Done(FinishReason),
    Failed(String),
}

/// One queued request.
struct Job {
    prompt: Vec<u32>,
    opts: GenerateOptions,
    replies: mpsc::UnboundedSender<Reply>,
}

struct AppState {
    model_id: String,
    context: usize,
    vocab: usize,
    tokenizer: Option<tokenizers::Tokenizer>,
    jobs: mpsc::Sender<Job>,
    /// Requests accepted and not yet finished.
    in_flight: AtomicUsize,
    requests: AtomicU64,
    started: u64,
}

/// A server running on threads of its own.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    http: Option<std::thread::JoinHandle<()>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Block until the server stops (it runs until [`shutdown`](Self::shutdown)).
    pub fn wait(mut self) {
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }

    /// Stop accepting connections, finish the requests in flight, and return.
    pub fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.wait();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Bind `cfg.addr`, start the HTTP threads and the GPU worker, and return at once.
/// Errors (the address is taken, the decoder cannot be allocated) come back here.
pub fn spawn(model: Arc<Model>, cfg: ServerConfig) -> Result<RunningServer> {
    let generator = Generator::new(model.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wgformer-http")
        .enable_all()
        .build()
        .map_err(|e| Error::Invalid(format!("cannot start the HTTP runtime: {e}")))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(cfg.addr))
        .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", cfg.addr)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", cfg.addr)))?;

    let (jobs, queue) = mpsc::channel::<Job>(cfg.queue.max(1));
    let state = Arc::new(AppState {
        model_id: cfg.model_id.clone().unwrap_or_else(|| model.name.clone()),
        context: generator.context(),
        vocab: model.vocab_size(),
        tokenizer: model.tokenizer.clone(),
        jobs,
        in_flight: AtomicUsize::new(0),
        requests: AtomicU64::new(0),
        started: unix_now(),
    });
    let worker = std::thread::Builder::new()
        .name("wgformer-gpu".into())
        .spawn(move || worker(generator, queue))
        .map_err(|e| Error::Invalid(format!("cannot start the GPU worker: {e}")))?;

    let app = Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state);
    let (shutdown, stop) = oneshot::channel::<()>();
    let http = std::thread::Builder::new()
        .name("wgformer-http-main".into())
        .spawn(move || {
            runtime.block_on(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stop.await;
                });
                if let Err(e) = serve.await {
                    log::error!("HTTP server stopped: {e}");
                }
            });
        })
        .map_err(|e| Error::Invalid(format!("cannot start the HTTP server: {e}")))?;
    Ok(RunningServer {
        addr,
        shutdown: Some(shutdown),
        http: Some(http),
        worker: Some(worker),
    })
}

/// The GPU worker: one request at a time, to the end or until its client is gone.
fn worker(mut generator: Generator, mut queue: mpsc::Receiver<Job>) {
    let ctx = generator.model().ctx.clone();
    while let Some(job) = queue.blocking_recv() {
        if job.replies.is_closed() {
            continue;
        }
        let mut stream = match generator.stream(&job.prompt, &job.opts) {
            Ok(s) => s,
            Err(e) => {
                let _ = job.replies.send(Reply::Failed(e.to_string()));
                continue;
            }
        };
        loop {
            match ctx.block_on(stream.next()) {
                Ok(Some(tok)) => {
                    if job.replies.send(Reply::Token(tok)).is_err() {
                        break; // the client went away
                    }
                }
                Ok(None) => {
                    let reason = stream.finish_reason().unwrap_or(FinishReason::Length);
                    let _ = job.replies.send(Reply::Done(reason));
                    break;
                }
                Err(e) => {
                    log::error!("generation failed: {e}");
                    let _ = job.replies.send(Reply::Failed(e.to_string()));
                    break;
                }
            }
        }
    }
}

/// An error response in OpenAI's shape.
struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let code = match self.status {
            StatusCode::NOT_FOUND => json!("not_found"),
            StatusCode::SERVICE_UNAVAILABLE => json!("overloaded"),
            _ => Value::Null,
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": code,
        }});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>, param: Option<&'static str>) -> ApiError {
    ApiError {
        status,
        message: message.into(),
        param,
    }
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    error(StatusCode::BAD_REQUEST, message, Some(param))
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: the server has POST /v1/completions, GET /v1/models and GET /health",
        None,
    )
    .into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "status": "ok",
        "model": st.model_id,
        "context": st.context,
        "in_flight": st.in_flight.load(Ordering::Relaxed),
        "requests": st.requests.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_id,
            "object": "model",
            "created": st.started,
            "owned_by": "wgformer",
        }],
    }))
    .into_response()
}

/// The body of `POST /v1/completions`, as far as this server reads it. Fields it does
/// not know are ignored; known ones it does not support are refused when they would
/// change the answer.
#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Option<Value>,
    max_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u64>,
    seed: Option<u64>,
    stop: Option<Value>,
    #[serde(default)]
    stream: bool,
    n: Option<u64>,
    best_of: Option<u64>,
    #[serde(default)]
    echo: bool,
    logprobs: Option<Value>,
}

/// A checked request, ready for the worker.
struct Checked {
    prompt: Vec<u32>,
    opts: GenerateOptions,
    stream: bool,
}

fn random_seed(st: &AppState) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ st.requests.load(Ordering::Relaxed).rotate_left(32)
}

fn check(st: &AppState, body: &[u8]) -> std::result::Result<Checked, ApiError> {
    let req: CompletionRequest = serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_syntax() || e.is_eof() {
            "the body is not valid JSON"
        } else {
            "the body does not match the completions API"
        };
        bad(format!("{what}: {e}"), "body")
    })?;
    if let Some(m) = &req.model {
        if *m != st.model_id {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!(
                    "the model `{m}` does not exist; this server has `{}`",
                    st.model_id
                ),
                Some("model"),
            ));
        }
    }
    if req.n.is_some_and(|n| n != 1) || req.best_of.is_some_and(|n| n != 1) {
        return Err(bad("only n = 1 (and best_of = 1) is supported", "n"));
    }
    if req.echo {
        return Err(bad("echo is not supported", "echo"));
    }
    if req.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad("logprobs are not supported", "logprobs"));
    }
    let prompt = prompt_ids(st, req.prompt.as_ref())?;
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS as u64);
    if max_tokens == 0 || max_tokens > st.context as u64 {
        return Err(bad(
            format!(
                "max_tokens must be in 1..={} (the model's context), got {max_tokens}",
                st.context
            ),
            "max_tokens",
        ));
    }
    let max_tokens = max_tokens as usize;
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(bad(
            format!("temperature must be in [0, {MAX_TEMPERATURE}], got {temperature}"),
            "temperature",
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(bad(
            format!("top_p must be in (0, 1], got {top_p}"),
            "top_p",
        ));
    }
    let top_k = req.top_k.unwrap_or(0);
    if top_k > st.vocab as u64 {
        return Err(bad(
            format!(
                "top_k must be in 0..={} (0 keeps every token), got {top_k}",
                st.vocab
            ),
            "top_k",
        ));
    }
    let stop = stop_strings(req.stop.as_ref())?;
    if !stop.is_empty() && st.tokenizer.is_none() {
        return Err(bad(
            "stop needs a tokenizer, and this model has none",
            "stop",
        ));
    }
    if prompt.len() + max_tokens > st.context {
        return Err(bad(
            format!(
                "this model's maximum context length is {} tokens, but the prompt has {} and \
                 max_tokens asks for {max_tokens} more ({} in all); shorten the prompt or lower \
                 max_tokens",
                st.context,
                prompt.len(),
                prompt.len() + max_tokens
            ),
            "prompt",
        ));
    }
    let opts = GenerateOptions {
        max_tokens,
        temperature,
        top_k: top_k as usize,
        top_p,
        seed: req.seed.unwrap_or_else(|| random_seed(st)),
        stop,
        stop_at_eos: true,
    };
    Ok(Checked {
        prompt,
        opts,
        stream: req.stream,
    })
}

/// The prompt as ids: a string (tokenized), or an array of ids, or a one-element array
/// of either.
fn prompt_ids(st: &AppState, prompt: Option<&Value>) -> std::result::Result<Vec<u32>, ApiError> {
    let Some(p) = prompt else {
        return Err(bad("missing required field `prompt`", "prompt"));
    };
    let shape = "prompt must be a string, an array of token ids, or a one-element array of \
                 either";
    let ids = match p {
        Value::String(text) => match &st.tokenizer {
            Some(tok) => {
                crate::tokenizer::encode(tok, text).map_err(|e| bad(e.to_string(), "prompt"))?
            }
            None => {
                return Err(bad(
                    "this model has no tokenizer: send the prompt as an array of token ids",
                    "prompt",
                ))
            }
        },
        Value::Array(items)
            if items.len() == 1 && (items[0].is_string() || items[0].is_array()) =>
        {
            return prompt_ids(st, Some(&items[0]));
        }
        Value::Array(items)
            if items.iter().all(|v| v.is_string() || v.is_array()) && !items.is_empty() =>
        {
            return Err(bad("only one prompt per request is supported", "prompt"));
        }
        Value::Array(items) => {
            let mut ids = Vec::with_capacity(items.len());
            for v in items {
                match v.as_u64() {
                    Some(id) if id < st.vocab as u64 => ids.push(id as u32),
                    Some(id) => {
                        return Err(bad(
                            format!(
                                "token id {id} is outside the vocabulary of {} (ids are 0..={})",
                                st.vocab,
                                st.vocab - 1
                            ),
                            "prompt",
                        ))
                    }
                    None => return Err(bad(shape, "prompt")),
                }
            }
            ids
        }
        _ => return Err(bad(shape, "prompt")),
    };
    if ids.is_empty() {
        return Err(bad("the prompt is empty", "prompt"));
    }
    Ok(ids)
}

fn stop_strings(stop: Option<&Value>) -> std::result::Result<Vec<String>, ApiError> {
    let shape = "stop must be a string or an array of at most 4 non-empty strings";
    let stops: Vec<String> = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad(shape, "stop"))?,
        Some(_) => return Err(bad(shape, "stop")),
    };
    if stops.len() > MAX_STOPS || stops.iter().any(|s| s.is_empty()) {
        return Err(bad(shape, "stop"));
    }
    Ok(stops)
}

/// The text a token contributes: its decoded text, or its id for a model without a
/// tokenizer.
fn token_text(has_tokenizer: bool, tok: &Token) -> String {
    if has_tokenizer {
        tok.text.clone()
    } else {
        format!(" {}", tok.id)
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight(Arc<AppState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let req = match check(&st, &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let n = st.requests.fetch_add(1, Ordering::Relaxed);
    let id = format!("cmpl-{}-{n}", st.started);
    let created = unix_now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let prompt_tokens = req.prompt.len();
    let job = Job {
        prompt: req.prompt,
        opts: req.opts,
        replies: tx,
    };
    st.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(st.clone());
    if let Err(e) = st.jobs.try_send(job) {
        let msg = match e {
            mpsc::error::TrySendError::Full(_) => {
                "the server is busy: too many queued requests; retry later"
            }
            mpsc::error::TrySendError::Closed(_) => "the generation worker has stopped",
        };
        return error(StatusCode::SERVICE_UNAVAILABLE, msg, None).into_response();
    }
    let has_tokenizer = st.tokenizer.is_some();
    let model = st.model_id.clone();
    if req.stream {
        let chunk = move |text: String, ids: Vec<u32>, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{
                    "text": text,
                    "index": 0,
                    "logprobs": null,
                    "finish_reason": finish,
                    "token_ids": ids,
                }],
            })
        };
        let events = UnboundedReceiverStream::new(rx).map(move |reply| {
            let _keep = &guard;
            let data = match reply {
                Reply::Token(tok) => chunk(token_text(has_tokenizer, &tok), vec![tok.id], None),
                Reply::Done(reason) => chunk(String::new(), Vec::new(), Some(reason.as_str())),
                Reply::Failed(msg) => json!({"error": {
                    "message": msg, "type": "server_error", "param": null, "code": null,
                }}),
            };
            Ok::<_, Infallible>(Event::default().data(data.to_string()))
        });
        let done = tokio_stream::once(Ok::<_, Infallible>(Event::default().data("[DONE]")));
        return Sse::new(events.chain(done)).into_response();
    }
    let (mut text, mut ids) = (String::new(), Vec::new());
    let finish = loop {
        match rx.recv().await {
            Some(Reply::Token(tok)) => {
                text.push_str(&token_text(has_tokenizer, &tok));
                ids.push(tok.id);
            }
            Some(Reply::Done(reason)) => break reason,
            Some(Reply::Failed(msg)) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, msg, None).into_response();
            }
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the generation worker stopped",
                    None,
                )
                .into_response()
            }
        }
    };
    drop(guard);
    Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{
            "text": text,
            "index": 0,
            "logprobs": null,
            "finish_reason": finish.as_str(),
            "token_ids": ids,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": ids.len(),
            "total_tokens": prompt_tokens + ids.len(),
        },
    }))
    .into_response()
}

/// Serve `model` on `cfg.addr` until the process ends (the CLI's `wgformer serve`).
pub fn serve(model: Arc<Model>, cfg: ServerConfig) -> Result<()> {
    let server = spawn(model, cfg)?;
    log::info!("listening on http://{}", server.addr());
    server.wait();
    Ok(())
}
