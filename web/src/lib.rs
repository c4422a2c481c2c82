//! wgformer in the browser: the wasm-bindgen bindings the demo page (`assets/web/`) calls.
//! The same library and WGSL shaders as the native CLI run on the browser's WebGPU. Every
//! call that touches the GPU returns a JS Promise and nothing blocks: readbacks are
//! awaited from the browser's event loop.
//!
//! - [`adapter_info`] (`adapterInfo()`): the adapter's name, features and limits.
//! - [`WebGenerator`] (`Generator`): load a model from its `config.json`, safetensors bytes
//!   and `tokenizer.json`; generate with a KV cache, streaming each token to a callback;
//!   the first step's logits (what the browser test compares with the native CLI).
//! - [`WebTrainer`] (`Trainer`): a small character-level GPT trained on text the page gives,
//!   one AdamW step per call with its loss read back, and samples from it.
//!
//! Build: `scripts/build-web` (cargo for wasm32, then wasm-bindgen-cli of the version
//! pinned in Cargo.toml).

// The library shares devices and models through `Arc` (its native server is threaded);
// here there is one thread and the `Arc`s only count references.
#![allow(clippy::arc_with_non_send_sync)]
// Each call holds its model's `RefCell` while it awaits the GPU, on purpose: a second
// call meanwhile gets a "busy" error from `try_borrow_mut`, never a panic.
#![allow(clippy::await_holding_refcell_ref)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;

use js_sys::{Function, Promise};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use wgformer::gpu::{BackendChoice, GpuContext, GpuOptions, Needs};
use wgformer::infer::generator::{GenerateOptions, Generator};
use wgformer::infer::model::{needs, Model};
use wgformer::model::checkpoint::gpt2_values_from_bytes;
use wgformer::model::gpt2::{Gpt2, OptimConfig, Trainer};
use wgformer::model::Gpt2Config;
use wgformer::rng::Rng;
use wgformer::tokenizer;

/// A JS `Error` carrying a wgformer error's message.
fn js_err(e: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&e.to_string()).into()
}

/// A JSON value as a plain JS object.
fn to_js(v: serde_json::Value) -> JsValue {
    js_sys::JSON::parse(&v.to_string()).unwrap_or(JsValue::NULL)
}

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Open the browser's WebGPU adapter with the limits `needs` asks for.
async fn open_device(needs: &Needs) -> Result<GpuContext, JsValue> {
    let opts = GpuOptions {
        backend: BackendChoice::WebGpu,
        ..Default::default()
    };
    GpuContext::with_needs(&opts, needs).await.map_err(js_err)
}

fn adapter_json(ctx: &GpuContext) -> serde_json::Value {
    let l = ctx.adapter.limits();
    let info = &ctx.info;
    json!({
        "name": info.name,
        "vendor": info.vendor,
        "driver": info.driver,
        "driver_info": info.driver_info,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "features": format!("{:?}", ctx.adapter.features()),
        "limits": {
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
        },
    })
}

/// The adapter the page runs on: name, backend, features and limits. Rejects with a
/// message when the browser has no WebGPU adapter.
#[wasm_bindgen(js_name = adapterInfo)]
pub async fn adapter_info() -> Result<JsValue, JsValue> {
    let ctx = open_device(&Needs::default()).await?;
    Ok(to_js(adapter_json(&ctx)))
}

struct GenState {
    gen: Generator,
}

/// A model loaded for generation (JS class `Generator`).
#[wasm_bindgen(js_name = Generator)]
pub struct WebGenerator {
    state: Rc<RefCell<GenState>>,
    model: Arc<Model>,
}

/// Sampling options as the page gives them: temperature 0 is greedy; top-k 0 keeps
/// every token.
fn sample_options(max_tokens: u32, temperature: f32, top_k: u32, seed: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: max_tokens as usize,
        temperature,
        top_k: top_k as usize,
        seed: seed as u64,
        ..Default::default()
    }
}

/// Generate with `gen`, calling `on_token(text, id)` for each token; returns the ids,
/// the text and the timings as a JS object.
async fn run_generate(
    gen: &mut Generator,
    prompt: &str,
    opts: &GenerateOptions,
    on_token: Option<&Function>,
) -> Result<JsValue, JsValue> {
    let tok = gen
        .model()
        .tokenizer
        .clone()
        .ok_or_else(|| js_err("this model has no tokenizer"))?;
    let mut ids = tokenizer::encode(&tok, prompt).map_err(js_err)?;
    if ids.is_empty() {
        return Err(js_err(
            "the prompt is empty (or has no character the model knows)",
        ));
    }
    // The prompt keeps its last context - 1 tokens at most, and the completion gets
    // what room the context has left after it.
    let ctx_len = gen.context();
    if ids.len() >= ctx_len {
        ids.drain(..ids.len() - (ctx_len - 1));
    }
    let mut opts = opts.clone();
    opts.max_tokens = opts.max_tokens.min(ctx_len - ids.len());
    let opts = &opts;
    let prompt_tokens = ids.len();
    let start = now_ms();
    let mut first = None;
    let mut out_ids = Vec::new();
    let mut text = String::new();
    let mut stream = gen.stream(&ids, opts).map_err(js_err)?;
    while let Some(t) = stream.next().await.map_err(js_err)? {
        first.get_or_insert_with(now_ms);
        out_ids.push(t.id);
        text.push_str(&t.text);
        if let Some(f) = on_token {
            f.call2(
                &JsValue::NULL,
                &JsValue::from_str(&t.text),
                &JsValue::from(t.id),
            )?;
        }
    }
    let end = now_ms();
    let first = first.unwrap_or(end);
    let decode_tokens = out_ids.len().saturating_sub(1);
    let decode_ms = end - first;
    Ok(to_js(json!({
        "ids": out_ids,
        "text": text,
        "prompt_tokens": prompt_tokens,
        "prefill_ms": first - start,
        "decode_tokens": decode_tokens,
        "decode_ms": decode_ms,
        "decode_tokens_per_s": if decode_ms > 0.0 { decode_tokens as f64 * 1e3 / decode_ms } else { 0.0 },
    })))
}

#[wasm_bindgen(js_class = Generator)]
impl WebGenerator {
    /// Load a GPT-2 checkpoint: the text of its `config.json`, the bytes of its
    /// `model.safetensors` and the text of its `tokenizer.json`.
    pub fn load(config_json: String, weights: Vec<u8>, tokenizer_json: String) -> Promise {
        future_to_promise(async move {
            let cfg = Gpt2Config::from_json(&config_json, "config.json").map_err(js_err)?;
            let tok = tokenizer::from_json(&tokenizer_json, "tokenizer.json").map_err(js_err)?;
            let values =
                gpt2_values_from_bytes(&weights, &cfg, "model.safetensors").map_err(js_err)?;
            let ctx = Arc::new(open_device(&needs(&cfg)).await?);
            let gpt2 = Gpt2::from_values(&ctx, cfg, &values).map_err(js_err)?;
            let model = Arc::new(Model::from_parts(ctx, gpt2, Some(tok), "demo".into()));
            let gen = Generator::new(model.clone()).map_err(js_err)?;
            let state = Rc::new(RefCell::new(GenState { gen }));
            Ok(WebGenerator { state, model }.into())
        })
    }

    /// The model's configuration and the adapter it runs on.
    pub fn info(&self) -> JsValue {
        let cfg = &self.model.gpt2.config;
        to_js(json!({
            "n_layer": cfg.n_layer,
            "n_head": cfg.n_head,
            "n_embd": cfg.n_embd,
            "n_positions": cfg.n_positions,
            "vocab_size": cfg.vocab_size,
            "parameters": wgformer::model::params::num_parameters(cfg),
            "adapter": adapter_json(&self.model.ctx),
        }))
    }

    /// Generate up to `max_tokens` tokens after `prompt`, calling `on_token(text, id)` as
    /// each is sampled; resolves to `{ids, text, prompt_tokens, prefill_ms,
    /// decode_tokens, decode_ms, decode_tokens_per_s}`. Temperature 0 is greedy.
    pub fn generate(
        &self,
        prompt: String,
        max_tokens: u32,
        temperature: f32,
        top_k: u32,
        seed: u32,
        on_token: Option<Function>,
    ) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut st = state
                .try_borrow_mut()
                .map_err(|_| js_err("the generator is busy with another request"))?;
            let opts = sample_options(max_tokens, temperature, top_k, seed);
            run_generate(&mut st.gen, &prompt, &opts, on_token.as_ref()).await
        })
    }

    /// The logits (V) of the first generated token after `prompt` (the prefill's last
    /// position): what the browser test compares with the native CLI.
    #[wasm_bindgen(js_name = firstLogits)]
    pub fn first_logits(&self, prompt: String) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut st = state
                .try_borrow_mut()
                .map_err(|_| js_err("the generator is busy with another request"))?;
            run_generate(&mut st.gen, &prompt, &GenerateOptions::greedy(1), None).await?;
            let ctx = st.gen.model().ctx.clone();
            let logits = st.gen.decoder().logits(&ctx).await.map_err(js_err)?;
            Ok(js_sys::Float32Array::from(logits.as_slice()).into())
        })
    }
}

struct TrainState {
    ctx: Arc<GpuContext>,
    trainer: Trainer,
    data: Vec<i32>,
    rng: Rng,
    b: usize,
    t: usize,
    lr: f32,
    warmup: u32,
    gen: Generator,
}

/// A small character-level GPT trained in the page (JS class `Trainer`).
#[wasm_bindgen(js_name = Trainer)]
pub struct WebTrainer {
    state: Rc<RefCell<TrainState>>,
}

/// The trainer's settings, from the page's JSON (every field optional).
struct TrainOptions {
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
    block_size: usize,
    batch_size: usize,
    lr: f32,
    seed: u64,
}

impl TrainOptions {
    fn parse(json: &str) -> Result<Self, JsValue> {
        let v: serde_json::Value = if json.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(json).map_err(|e| js_err(format!("trainer options: {e}")))?
        };
        let int = |k: &str, d: usize| -> Result<usize, JsValue> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        js_err(format!("trainer option {k}: expected a positive integer"))
                    }),
            }
        };
        Ok(TrainOptions {
            n_layer: int("n_layer", 2)?,
            n_head: int("n_head", 4)?,
            n_embd: int("n_embd", 64)?,
            block_size: int("block_size", 32)?,
            batch_size: int("batch_size", 8)?,
            lr: v.get("lr").and_then(|x| x.as_f64()).unwrap_or(3e-3) as f32,
            seed: int("seed", 1)? as u64,
        })
    }
}

#[wasm_bindgen(js_class = Trainer)]
impl WebTrainer {
    /// A fresh model over the characters of `text`, with options as JSON
    /// (`{n_layer, n_head, n_embd, block_size, batch_size, lr, seed}`, all optional).
    pub fn create(text: String, options_json: String) -> Promise {
        future_to_promise(async move {
            let o = TrainOptions::parse(&options_json)?;
            let chars: BTreeSet<char> = text.chars().collect();
            let tok = tokenizer::char_level(chars).map_err(js_err)?;
            let data: Vec<i32> = tokenizer::encode(&tok, &text)
                .map_err(js_err)?
                .into_iter()
                .map(|i| i as i32)
                .collect();
            if data.len() < o.block_size + 2 {
                return Err(js_err(format!(
                    "the text has {} characters; training needs more than the block size of {}",
                    data.len(),
                    o.block_size + 1
                )));
            }
            let vocab = tok.get_vocab_size(true);
            let cfg = Gpt2Config::new(vocab, o.block_size, o.n_embd, o.n_layer, o.n_head);
            cfg.validate("trainer options").map_err(js_err)?;
            let need = Gpt2::needs(&cfg, o.batch_size, o.block_size);
            let ctx = Arc::new(open_device(&need).await?);
            let model = Gpt2::init(&ctx, cfg, o.seed).map_err(js_err)?;
            let opt = OptimConfig::default(); // β (0.9, 0.95), weight decay 0.1, clip 1
                                              // The generator shares the model's buffers, so it samples the latest weights.
            let shared = Model::from_parts(ctx.clone(), model.clone(), Some(tok), "page".into());
            let gen = Generator::new(Arc::new(shared)).map_err(js_err)?;
            let trainer =
                Trainer::new(&ctx, model, o.batch_size, o.block_size, opt).map_err(js_err)?;
            let state = TrainState {
                ctx,
                trainer,
                data,
                rng: Rng::new(o.seed),
                b: o.batch_size,
                t: o.block_size,
                lr: o.lr,
                warmup: 10,
                gen,
            };
            Ok(WebTrainer {
                state: Rc::new(RefCell::new(state)),
            }
            .into())
        })
    }

    /// One AdamW step on a random batch of the text; resolves to its loss.
    pub fn step(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut guard = state
                .try_borrow_mut()
                .map_err(|_| js_err("the trainer is busy"))?;
            let st = &mut *guard;
            let (b, t) = (st.b, st.t);
            let mut x = Vec::with_capacity(b * t);
            let mut y = Vec::with_capacity(b * t);
            for _ in 0..b {
                let s = st.rng.below((st.data.len() - t - 1) as u64) as usize;
                x.extend_from_slice(&st.data[s..s + t]);
                y.extend_from_slice(&st.data[s + 1..s + t + 1]);
            }
            let warm = ((st.trainer.step + 1) as f32 / st.warmup as f32).min(1.0);
            let loss = st
                .trainer
                .step(&st.ctx, &x, &y, st.lr * warm)
                .await
                .map_err(js_err)?;
            Ok(JsValue::from(loss))
        })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u32 {
        self.state.borrow().trainer.step
    }

    /// Parameters of the model.
    pub fn parameters(&self) -> usize {
        wgformer::model::params::num_parameters(&self.state.borrow().trainer.model.config)
    }

    /// Sample `max_tokens` characters after `prompt` from the model as trained so far.
    pub fn sample(&self, prompt: String, max_tokens: u32, temperature: f32, seed: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut st = state
                .try_borrow_mut()
                .map_err(|_| js_err("the trainer is busy"))?;
            let opts = sample_options(max_tokens, temperature, 0, seed);
            run_generate(&mut st.gen, &prompt, &opts, None).await
        })
    }
}
