//! The OpenAI-compatible server through a real HTTP client (ureq) on 127.0.0.1: health
//! and model listing; greedy completions equal to the fixture's continuation; 20
//! concurrent requests that each get exactly what they get alone; a streamed request
//! (server-sent events) equal to the same request unstreamed; every kind of bad request
//! answered with a 4xx JSON error while the server keeps serving; text prompts, stop
//! strings and streaming text on a model with GPT-2's tokenizer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use wgformer::gpu::{GpuContext, Needs};
use wgformer::infer::server::{spawn, RunningServer, ServerConfig};
use wgformer::infer::Model;
use wgformer::model::gpt2::Gpt2;
use wgformer::model::Gpt2Config;
use wgformer::testing::test_contexts;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

fn start(model: Model) -> RunningServer {
    let cfg = ServerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        queue: 64,
        model_id: None,
    };
    spawn(Arc::new(model), cfg).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into()
}

struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(server: &RunningServer) -> Self {
        Client {
            base: format!("http://{}", server.addr()),
            agent: agent(),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_json().unwrap())
    }

    fn post_raw(&self, body: &str) -> (u16, String) {
        let mut r = self
            .agent
            .post(format!("{}/v1/completions", self.base))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    fn post(&self, body: Value) -> (u16, Value) {
        let (status, text) = self.post_raw(&body.to_string());
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    /// A 200 completion's choice.
    fn complete(&self, body: Value) -> Value {
        let (status, v) = self.post(body.clone());
        assert_eq!(status, 200, "{body} -> {v}");
        v["choices"][0].clone()
    }
}

fn ids(choice: &Value) -> Vec<u64> {
    choice["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// The `data:` payloads of a server-sent-events body.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_string())
        .collect()
}

fn context() -> Arc<GpuContext> {
    Arc::new(test_contexts(&Needs::default()).remove(0))
}

#[test]
fn serves_completions_on_the_fixture() {
    let ctx = context();
    let server = start(Model::load_on(ctx, &fixture()).unwrap());
    let c = Client::new(&server);

    let (status, health) = c.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, models) = c.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "gpt2-tiny");

    // Greedy: the fixture's continuation, and usage counts.
    let greedy = [
        13, 92, 27, 27, 27, 6, 26, 67, 92, 27, 27, 92, 27, 27, 27, 27, 27, 27, 27, 6, 92, 34, 27,
        27, 27, 27, 26,
    ];
    let (status, v) = c.post(json!({
        "model": "gpt2-tiny", "prompt": [39, 29, 70, 11, 29], "max_tokens": 27, "temperature": 0
    }));
    assert_eq!(status, 200, "{v}");
    assert_eq!(ids(&v["choices"][0]), greedy);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["total_tokens"], 32);
    let text: String = greedy.iter().map(|i| format!(" {i}")).collect();
    assert_eq!(v["choices"][0]["text"], text);

    // 20 concurrent requests, each with its own seed and prompt, then each alone.
    let request = |i: u64| {
        json!({
            "prompt": [[1 + i % 7, 2 + i % 5, 3]], "max_tokens": 6 + (i % 4),
            "temperature": 1.0, "top_p": 0.95, "seed": 1000 + i
        })
    };
    let together: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let c = Client::new(&server);
                s.spawn(move || ids(&c.complete(request(i))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, got) in together.iter().enumerate() {
        let alone = ids(&c.complete(request(i as u64)));
        assert_eq!(*got, alone, "request {i}: concurrent ≠ alone");
        assert_eq!(got.len() as u64, 6 + (i as u64 % 4));
    }

    // Streamed: the same tokens as unstreamed, chunk by chunk, then [DONE].
    let body = json!({"prompt": [5, 6, 7], "max_tokens": 9, "temperature": 0.8, "seed": 42});
    let plain = c.complete(body.clone());
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (status, text) = c.post_raw(&streamed.to_string());
    assert_eq!(status, 200, "{text}");
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let streamed_ids: Vec<u64> = chunks.iter().flat_map(|c| ids(&c["choices"][0])).collect();
    assert_eq!(streamed_ids, ids(&plain));
    let streamed_text: String = chunks
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed_text, plain["text"].as_str().unwrap());
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "length"
    );
    assert_eq!(chunks.len(), 9 + 1, "one chunk per token and a final one");
    server.shutdown();
}

#[test]
fn bad_requests_get_json_errors_and_the_server_keeps_serving() {
    let ctx = context();
    let server = start(Model::load_on(ctx, &fixture()).unwrap());
    let c = Client::new(&server);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{\"prompt\": [1, 2".into(), 400, "body"),
        (
            "wrong type",
            json!({"prompt": [1], "max_tokens": "many"}).to_string(),
            400,
            "body",
        ),
        (
            "no prompt",
            json!({"max_tokens": 3}).to_string(),
            400,
            "prompt",
        ),
        (
            "empty prompt",
            json!({"prompt": []}).to_string(),
            400,
            "prompt",
        ),
        (
            "text to a model without tokenizer",
            json!({"prompt": "hi"}).to_string(),
            400,
            "prompt",
        ),
        (
            "id outside the vocabulary",
            json!({"prompt": [1, 101]}).to_string(),
            400,
            "prompt",
        ),
        (
            "two prompts",
            json!({"prompt": [[1], [2]]}).to_string(),
            400,
            "prompt",
        ),
        (
            "prompt of floats",
            json!({"prompt": [1.5]}).to_string(),
            400,
            "prompt",
        ),
        (
            "too long",
            json!({"prompt": vec![1; 30], "max_tokens": 5}).to_string(),
            400,
            "prompt",
        ),
        (
            "max_tokens 0",
            json!({"prompt": [1], "max_tokens": 0}).to_string(),
            400,
            "max_tokens",
        ),
        (
            "negative max_tokens",
            json!({"prompt": [1], "max_tokens": -2}).to_string(),
            400,
            "body",
        ),
        (
            "temperature 3",
            json!({"prompt": [1], "temperature": 3}).to_string(),
            400,
            "temperature",
        ),
        (
            "top_p 0",
            json!({"prompt": [1], "top_p": 0}).to_string(),
            400,
            "top_p",
        ),
        (
            "top_p 1.5",
            json!({"prompt": [1], "top_p": 1.5}).to_string(),
            400,
            "top_p",
        ),
        (
            "top_k past V",
            json!({"prompt": [1], "top_k": 500}).to_string(),
            400,
            "top_k",
        ),
        (
            "stop without tokenizer",
            json!({"prompt": [1], "stop": "x"}).to_string(),
            400,
            "stop",
        ),
        (
            "n = 2",
            json!({"prompt": [1], "n": 2}).to_string(),
            400,
            "n",
        ),
        (
            "other model",
            json!({"prompt": [1], "model": "gpt-4"}).to_string(),
            404,
            "model",
        ),
    ];
    for (what, body, want, param) in cases {
        let (status, text) = c.post_raw(&body);
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
        assert_eq!(status, want, "{what}: {v}");
        assert_eq!(v["error"]["param"], param, "{what}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().len() > 10,
            "{what}: {v}"
        );
        eprintln!("{what}: {status} {}", v["error"]["message"]);
    }
    let (status, v) = c.get("/v1/nothing");
    assert_eq!(status, 404);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/completions"));
    // Still serving.
    let choice = c.complete(json!({"prompt": [1, 2, 3], "max_tokens": 4, "seed": 1}));
    assert_eq!(ids(&choice).len(), 4);
    server.shutdown();
}

#[test]
fn text_prompts_stop_strings_and_streamed_text() {
    let ctx = context();
    let dir = std::env::temp_dir().join(format!("wgformer-server-{}", std::process::id()));
    let gpt2 = Gpt2::init(&ctx, Gpt2Config::new(50257, 64, 48, 2, 4), 11).unwrap();
    ctx.block_on(gpt2.save(&ctx, &dir)).unwrap();
    let model = Model::load_on(ctx.clone(), &dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let server = start(model);
    let c = Client::new(&server);
    let body =
        json!({"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.9, "seed": 8});
    let full = c.complete(body.clone());
    let text = full["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    // A stop string from the middle of that text: the same text, cut before it.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let mut with_stop = body.clone();
    with_stop["stop"] = json!([stop]);
    let stopped = c.complete(with_stop.clone());
    assert_eq!(stopped["text"], cut, "stop {stop:?}");
    assert_eq!(stopped["finish_reason"], "stop");
    // Streamed with the stop: the pieces add up to the same text.
    with_stop["stream"] = json!(true);
    let (status, body) = c.post_raw(&with_stop.to_string());
    assert_eq!(status, 200);
    let data = sse_data(&body);
    let pieces: String = data[..data.len() - 1]
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).unwrap();
            v["choices"][0]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(pieces, cut);
    server.shutdown();
}
