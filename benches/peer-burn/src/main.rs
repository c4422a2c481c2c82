//! `peer-burn`: the workloads of `wgformer bench` run with burn (https://burn.dev) on its wgpu backend, so the
//! two can be compared on the same adapter in the same session.
//!
//! Three measurements, all in f32 on one wgpu device pinned to Vulkan (by default):
//!
//! * `matmul`: `[M, K] x [K, N]` at the four GPT-2 124M shapes (B·T = 256), the median of
//!   `--reps` timed products after warm-up (warm-up includes burn's autotune).
//! * `step`: one training step of nanoGPT's "baby GPT" (forward, cross-entropy, backward,
//!   gradient clipping, AdamW), the median of `--steps` timed steps after two warm-up steps.
//! * `decode`: a 64-token prefill (median of `--reps`), and greedy generation of 64 tokens
//!   from a one-token prompt, recomputing the whole forward on the growing sequence for each
//!   token (no KV cache).
//!
//! Every timed repetition ends by waiting for the device: `Device::sync()` (which flushes
//! burn's fusion queue and waits for the GPU queue to drain) for the matmuls, the loss read
//! back to the host followed by `Device::sync()` for a training step (the read waits for the
//! forward; the sync for the backward and the optimizer update queued after it), and the
//! argmax token read back to the host for prefill and decode (the next token depends on it).
//!
//! stdout gets one JSON object (`{peer, adapter, date, results: [...]}`, the shape
//! `wgformer bench all --peer` reads); stderr gets a human summary and progress.

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{Initializer, Module};
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::wgpu::{wgpu, WgpuBackend};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use serde::Serialize;

/// The burn release this crate is pinned to (keep in step with Cargo.toml).
const BURN_VERSION: &str = "0.22.1";

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// Which parts to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Only {
    All,
    Matmul,
    Step,
    Decode,
}

#[derive(Debug)]
struct Args {
    /// Timed repetitions of each matmul and of the prefill (after warm-up).
    reps: usize,
    /// Timed training steps (after two warm-up steps).
    steps: usize,
    only: Only,
    /// Graphics API the wgpu device is pinned to.
    api: WgpuBackend,
}

const USAGE: &str = "\
peer-burn: wgformer's benchmark workloads run with burn on its wgpu backend

USAGE: peer-burn [--reps N] [--steps N] [--only matmul|step|decode] [--api vulkan|gl|auto]

  --reps N     timed repetitions per matmul shape and of the prefill (default 5)
  --steps N    timed baby-GPT training steps (default 5)
  --only P     run one part only (decode includes the prefill)
  --api A      graphics API for wgpu: vulkan, gl or auto (burn chooses); default: the
               WGPU_BACKEND environment variable if set, else vulkan

Prints a JSON report on stdout and a summary on stderr.";

/// A graphics API by the name `--api` and `WGPU_BACKEND` use.
fn parse_api(name: &str) -> Result<WgpuBackend, String> {
    match name.trim().to_lowercase().as_str() {
        "vulkan" => Ok(WgpuBackend::Vulkan),
        "gl" => Ok(WgpuBackend::Gl),
        "auto" => Ok(WgpuBackend::Auto),
        other => Err(format!(
            "unknown graphics API {other:?} (expected vulkan, gl or auto)"
        )),
    }
}

fn parse_args() -> Result<Args, String> {
    // The same variable wgformer's scripts set, so that both pick the same adapter.
    let api = match std::env::var("WGPU_BACKEND") {
        Ok(v) if !v.trim().is_empty() => parse_api(&v).map_err(|e| format!("WGPU_BACKEND: {e}"))?,
        _ => WgpuBackend::Vulkan,
    };
    let mut args = Args {
        reps: 5,
        steps: 5,
        only: Only::All,
        api,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--reps" => args.reps = parse_count(&flag, &value()?)?,
            "--steps" => args.steps = parse_count(&flag, &value()?)?,
            "--only" => {
                args.only = match value()?.as_str() {
                    "matmul" => Only::Matmul,
                    "step" => Only::Step,
                    "decode" => Only::Decode,
                    other => return Err(format!("--only: unknown part {other:?}")),
                }
            }
            "--api" => args.api = parse_api(&value()?).map_err(|e| format!("--api: {e}"))?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(args)
}

fn parse_count(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: expected a positive integer, got {v:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers: timing, dates, a seeded RNG for token data
// ---------------------------------------------------------------------------------------------

/// Median of a non-empty list of durations in seconds.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Today's date in UTC as yyyy-mm-dd (civil-from-days, H. Hinnant's algorithm).
fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// SplitMix64: a tiny deterministic generator for the token data (the model's own weights
/// come from burn's RNG, seeded with `Device::seed`).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant for n = 65).
    fn below(&mut self, n: usize) -> i64 {
        (self.next() % n as u64) as i64
    }
}

/// Untimed repetitions before the timed ones, for the matmuls and the prefill (the training
/// step has its own two warm-up steps, decode a whole warm-up pass). The first runs autotune
/// and compiles the kernels; the second catches anything the first left half-done.
const WARMUP: usize = 2;

/// Waits until everything queued on `device` has run.
fn sync(device: &Device) {
    device.sync().expect("device sync failed");
}

// ---------------------------------------------------------------------------------------------
// The report (structs rather than `serde_json::Value` so that the keys keep this order)
// ---------------------------------------------------------------------------------------------

/// The JSON object printed on stdout; `peer`, `adapter`, `date` and `results` are what
/// `wgformer bench all --peer` reads, the rest documents the run.
#[derive(Serialize)]
struct Report {
    peer: String,
    adapter: String,
    backend: String,
    driver: String,
    /// `wgsl` (through naga) or `spirv` (cubecl's own SPIR-V compiler, `vulkan-spirv` feature).
    shader_compiler: &'static str,
    burn_features: &'static str,
    dtype: &'static str,
    date: String,
    reps: usize,
    steps: usize,
    results: Vec<Entry>,
}

/// One measurement: `ms` is the median time of one repetition (one matmul, one training
/// step, one prefill) or, for decode, the time per generated token.
#[derive(Serialize, Default)]
struct Entry {
    name: String,
    shape: String,
    ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cold_tokens_per_s: Option<f64>,
    /// Decode: each generated token's time, context 1 to 64.
    #[serde(skip_serializing_if = "Option::is_none")]
    per_token_ms: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_loss: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_loss: Option<f32>,
    /// Every step's loss, warm-up steps included.
    #[serde(skip_serializing_if = "Option::is_none")]
    losses: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup_ms: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// (a) matmul at GPT-2 124M shapes
// ---------------------------------------------------------------------------------------------

/// `[M, K] x [K, N]` in f32 on the plain (non-autodiff) device: two warm-up products (the
/// first runs burn's matmul autotune for the shape and compiles the kernels), then `reps`
/// timed products, each followed by `Device::sync()`.
fn bench_matmul(device: &Device, reps: usize) -> Vec<Entry> {
    // (label, M, K, N): the four linear layers of GPT-2 124M at B·T = 256.
    let cases = [
        ("qkv", 256, 768, 2304),
        ("attn proj", 256, 768, 768),
        ("fc", 256, 768, 3072),
        ("mlp proj", 256, 3072, 768),
    ];
    let mut out = Vec::new();
    for (label, m, k, n) in cases {
        let a = Tensor::<2>::random([m, k], Distribution::Uniform(-1.0, 1.0), device);
        let b = Tensor::<2>::random([k, n], Distribution::Uniform(-1.0, 1.0), device);
        sync(device);

        // Warm-up: autotune, pipeline compilation, memory pool growth.
        let t0 = Instant::now();
        for _ in 0..WARMUP {
            let c = a.clone().matmul(b.clone());
            sync(device);
            drop(c);
        }
        let warmup_s = t0.elapsed().as_secs_f64();

        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            // Keep the product alive until the sync so nothing can treat it as dead work.
            let c = a.clone().matmul(b.clone());
            sync(device);
            times.push(t0.elapsed().as_secs_f64());
            drop(c);
        }
        let s = median(times);
        let gflops = 2.0 * (m * k * n) as f64 / s / 1e9;
        eprintln!(
            "matmul {label:<9} M={m} K={k} N={n}: {:8.2} ms  {gflops:6.2} GFLOP/s  (warm-up {:.0} ms)",
            s * 1e3,
            warmup_s * 1e3
        );
        out.push(Entry {
            name: format!("matmul {label}"),
            shape: format!("M={m} K={k} N={n}"),
            ms: s * 1e3,
            gflops: Some(gflops),
            ..Default::default()
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The baby GPT (nanoGPT's shakespeare-char "baby GPT", GPT-2 architecture)
// ---------------------------------------------------------------------------------------------

/// Model shape.
#[derive(Clone, Copy, Debug)]
struct GptConfig {
    vocab_size: usize,
    block_size: usize,
    n_layer: usize,
    n_head: usize,
    n_embd: usize,
}

/// nanoGPT's baby GPT: vocab 65 (shakespeare-char), 4 layers, 4 heads, 128 channels, T = 64.
const BABY: GptConfig = GptConfig {
    vocab_size: 65,
    block_size: 64,
    n_layer: 4,
    n_head: 4,
    n_embd: 128,
};

/// GPT-2 initialisation: N(0, 0.02) for matrices and embeddings (burn's initializer also
/// draws the Linear biases from it; nanoGPT zeroes them, which does not matter for speed).
fn gpt2_init(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// One pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).
#[derive(Module, Debug)]
struct Block {
    ln_1: LayerNorm,
    /// Fused q, k, v projection, `[C, 3C]`.
    c_attn: Linear,
    /// Attention output projection, `[C, C]`.
    attn_proj: Linear,
    ln_2: LayerNorm,
    /// MLP up-projection, `[C, 4C]`.
    c_fc: Linear,
    /// MLP down-projection, `[4C, C]`.
    mlp_proj: Linear,
    gelu: Gelu,
    n_head: usize,
}

impl Block {
    fn new(cfg: &GptConfig, device: &Device) -> Self {
        let c = cfg.n_embd;
        // GPT-2 scales the residual projections' init by 1/sqrt(2 * n_layer).
        let proj_std = 0.02 / ((2 * cfg.n_layer) as f64).sqrt();
        Self {
            ln_1: LayerNormConfig::new(c).init(device),
            c_attn: LinearConfig::new(c, 3 * c)
                .with_initializer(gpt2_init(0.02))
                .init(device),
            attn_proj: LinearConfig::new(c, c)
                .with_initializer(gpt2_init(proj_std))
                .init(device),
            ln_2: LayerNormConfig::new(c).init(device),
            c_fc: LinearConfig::new(c, 4 * c)
                .with_initializer(gpt2_init(0.02))
                .init(device),
            mlp_proj: LinearConfig::new(4 * c, c)
                .with_initializer(gpt2_init(proj_std))
                .init(device),
            // GPT-2's GELU (tanh approximation), as wgformer's and llm.c's kernels compute it.
            gelu: Gelu::new_approximate(),
            n_head: cfg.n_head,
        }
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, c] = x.dims();
        let (nh, hs) = (self.n_head, c / self.n_head);

        // Causal self-attention. burn's fused `attention` op takes [B, NH, T, HS]; on a plain
        // device it may autotune a flash-attention kernel, under autodiff it decomposes into
        // matmul + masked softmax + matmul so that it can be differentiated.
        let qkv = self.c_attn.forward(self.ln_1.forward(x.clone()));
        let heads = |t3: Tensor<3>| t3.reshape([b, t, nh, hs]).swap_dims(1, 2);
        let mut parts = qkv.chunk(3, 2).into_iter().map(heads);
        let (q, k, v) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let options = AttentionModuleOptions {
            is_causal: true,
            ..Default::default()
        };
        let y = attention(q, k, v, None, None, options); // scale defaults to 1/sqrt(HS)
        let y = y.swap_dims(1, 2).reshape([b, t, c]);
        let x = x + self.attn_proj.forward(y);

        // MLP.
        let h = self
            .gelu
            .forward(self.c_fc.forward(self.ln_2.forward(x.clone())));
        x + self.mlp_proj.forward(h)
    }
}

/// GPT-2: token + learned position embeddings, pre-LN blocks, final LayerNorm, and an
/// lm_head **tied** to the token embedding (logits = x · wteᵀ), as in GPT-2 and nanoGPT.
/// No dropout.
#[derive(Module, Debug)]
struct Gpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

impl Gpt {
    fn new(cfg: &GptConfig, device: &Device) -> Self {
        Self {
            wte: EmbeddingConfig::new(cfg.vocab_size, cfg.n_embd)
                .with_initializer(gpt2_init(0.02))
                .init(device),
            wpe: EmbeddingConfig::new(cfg.block_size, cfg.n_embd)
                .with_initializer(gpt2_init(0.02))
                .init(device),
            blocks: (0..cfg.n_layer).map(|_| Block::new(cfg, device)).collect(),
            ln_f: LayerNormConfig::new(cfg.n_embd).init(device),
        }
    }

    /// Final hidden states `[B, T, C]` for tokens `[B, T]`.
    fn hidden(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let pos = Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]);
        // [B, T, C] + [1, T, C], broadcast over the batch.
        let mut x = self.wte.forward(tokens) + self.wpe.forward(pos);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.ln_f.forward(x)
    }

    /// Tied lm_head: `[..., C] -> [..., V]`.
    fn lm_head<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // The embedding table is [V, C]; the head multiplies by its transpose.
        let w = self.wte.weight.val().transpose();
        burn::tensor::module::linear(x, w, None)
    }

    /// Logits `[B, T, V]` for every position (training).
    fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.lm_head(self.hidden(tokens))
    }

    /// Logits `[B, V]` for the last position only (inference; nanoGPT does the same).
    fn forward_last(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let h = self.hidden(tokens);
        let [b, t, c] = h.dims();
        let last = h.slice([0..b, t - 1..t, 0..c]).reshape([b, c]);
        self.lm_head(last)
    }
}

fn int_tensor(values: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_data(TensorData::new(values, shape), device)
}

// ---------------------------------------------------------------------------------------------
// (b) one training step of the baby GPT
// ---------------------------------------------------------------------------------------------

/// Forward, cross-entropy, backward, per-parameter gradient-norm clipping at 1.0, AdamW
/// (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on every parameter), on one fixed
/// random batch, B = 12, T = 64. Two warm-up steps, then `steps` timed steps.
fn bench_step(device: &Device, steps: usize) -> Entry {
    let cfg = BABY;
    let (b, t) = (12, cfg.block_size);
    let ad = device.clone().autodiff();
    ad.seed(1337);

    // The same random batch every step (inputs and unrelated random targets, like
    // `wgformer bench step`), so the loss must fall as the model memorises it.
    let mut rng = SplitMix64(7);
    let x: Vec<i64> = (0..b * t).map(|_| rng.below(cfg.vocab_size)).collect();
    let y: Vec<i64> = (0..b * t).map(|_| rng.below(cfg.vocab_size)).collect();
    let inputs = int_tensor(x, [b, t], &ad);
    let targets = int_tensor(y, [b, t], &ad).reshape([b * t]);

    let mut model = Gpt::new(&cfg, &ad);
    let loss_fn: CrossEntropyLoss = CrossEntropyLossConfig::new().init(&ad);
    let mut optim = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.1)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let lr = 1e-3;

    let mut step = |model: Gpt| -> (Gpt, f32, f64) {
        let t0 = Instant::now();
        let logits = model
            .forward(inputs.clone())
            .reshape([b * t, cfg.vocab_size]);
        let loss = loss_fn.forward(logits, targets.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(lr, model, grads);
        // Sync: reading the loss waits for the forward; the sync waits for the backward
        // and the parameter update queued after it.
        let loss: f32 = loss.into_scalar();
        sync(&ad);
        (model, loss, t0.elapsed().as_secs_f64())
    };

    let mut losses = Vec::new();
    let mut warmup_ms = Vec::new();
    for _ in 0..2 {
        let (m, loss, s) = step(model);
        model = m;
        losses.push(loss);
        warmup_ms.push(s * 1e3);
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (m, loss, s) = step(model);
        model = m;
        losses.push(loss);
        times.push(s);
    }
    let s = median(times);
    let (first_loss, last_loss) = (losses[0], *losses.last().unwrap());
    let tokens_per_s = (b * t) as f64 / s;
    eprintln!(
        "baby GPT step B={b} T={t}: {:.1} ms/step  {tokens_per_s:.0} tokens/s  \
         loss {first_loss:.4} -> {last_loss:.4}  (warm-up steps {:.0}, {:.0} ms)",
        s * 1e3,
        warmup_ms[0],
        warmup_ms[1]
    );
    if last_loss >= first_loss {
        eprintln!(
            "peer-burn: warning: the training loss did not fall ({first_loss} -> {last_loss})"
        );
    }
    Entry {
        name: "baby GPT training step".into(),
        shape: format!(
            "B={b} T={t} L={} C={} NH={} V={}",
            cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.vocab_size
        ),
        ms: s * 1e3,
        tokens_per_s: Some(tokens_per_s),
        first_loss: Some(first_loss),
        last_loss: Some(last_loss),
        losses: Some(losses),
        warmup_ms: Some(warmup_ms),
        note: Some(
            "median of the timed steps after 2 warm-up steps; step = forward, cross-entropy, \
             backward, per-parameter grad-norm clip 1.0 (burn's GradientClipping::Norm; \
             wgformer clips the global norm), AdamW lr 1e-3 betas 0.9/0.95 eps 1e-8 weight \
             decay 0.1 on all parameters (burn's AdamW has no no-decay group by default); \
             lm_head tied to wte; tanh GELU; no dropout; synced by reading the loss back, \
             then Device::sync()"
                .into(),
        ),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// (c) prefill and greedy decode of the (untrained) baby GPT
// ---------------------------------------------------------------------------------------------

/// Next token by greedy argmax of the last position's logits, read back to the host.
fn greedy_next(model: &Gpt, tokens: &[i64], device: &Device) -> i64 {
    let input = int_tensor(tokens.to_vec(), [1, tokens.len()], device);
    let logits = model.forward_last(input); // [1, V]
    logits.argmax(1).into_scalar::<i64>()
}

/// Generate `new_tokens` greedily after `prompt`, recomputing the full forward each time.
/// Returns the tokens and the wall-clock seconds of each generated token.
fn generate(
    model: &Gpt,
    prompt: &[i64],
    new_tokens: usize,
    device: &Device,
) -> (Vec<i64>, Vec<f64>) {
    let mut tokens = prompt.to_vec();
    let mut secs = Vec::with_capacity(new_tokens);
    for _ in 0..new_tokens {
        let t0 = Instant::now();
        // The context never exceeds the block size (nanoGPT crops the same way).
        let start = tokens.len().saturating_sub(BABY.block_size);
        let next = greedy_next(model, &tokens[start..], device);
        tokens.push(next);
        secs.push(t0.elapsed().as_secs_f64());
    }
    (tokens, secs)
}

fn bench_decode(device: &Device, reps: usize) -> Vec<Entry> {
    let cfg = BABY;
    device.seed(1337);
    // Inference on the plain device: no autodiff graph is recorded.
    let model = Gpt::new(&cfg, device);
    let mut rng = SplitMix64(11);
    let mut out = Vec::new();

    // Prefill: one forward of a B=1, T=64 prompt, to the first generated token.
    let prompt: Vec<i64> = (0..cfg.block_size)
        .map(|_| rng.below(cfg.vocab_size))
        .collect();
    let t0 = Instant::now();
    for _ in 0..WARMUP {
        greedy_next(&model, &prompt, device);
    }
    let prefill_warmup = t0.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        greedy_next(&model, &prompt, device);
        times.push(t0.elapsed().as_secs_f64());
    }
    let s = median(times);
    let tps = cfg.block_size as f64 / s;
    eprintln!(
        "baby GPT prefill T={}: {:.1} ms  {tps:.0} tokens/s  (warm-up {:.0} ms)",
        cfg.block_size,
        s * 1e3,
        prefill_warmup * 1e3
    );
    out.push(Entry {
        name: "baby GPT prefill".into(),
        shape: format!("B=1 T={}", cfg.block_size),
        ms: s * 1e3,
        tokens_per_s: Some(tps),
        note: Some(
            "one forward of a 64-token prompt, lm_head on the last position only (as \
             nanoGPT at inference), synced by reading the argmax token back; median of --reps \
             after two warm-ups"
                .into(),
        ),
        ..Default::default()
    });

    // Decode: 1-token prompt, 64 greedy tokens. Every sequence length is a new shape for
    // burn (fusion, autotune, pipeline compilation), so the first pass is a warm-up whose
    // time is reported separately; the second pass is timed.
    let new_tokens = 64;
    let start = [rng.below(cfg.vocab_size)];
    let (cold_tokens, cold) = generate(&model, &start, new_tokens, device);
    let (tokens, per_token) = generate(&model, &start, new_tokens, device);
    assert_eq!(cold_tokens, tokens, "greedy decoding must be deterministic");
    let (cold_s, s) = (cold.iter().sum::<f64>(), per_token.iter().sum::<f64>());
    let tps = new_tokens as f64 / s;
    eprintln!(
        "baby GPT decode 1+{new_tokens}: {:.1} ms/token  {tps:.2} tokens/s  (context 1: {:.1} ms, \
         context {new_tokens}: {:.1} ms; cold pass {:.2} tokens/s)",
        s * 1e3 / new_tokens as f64,
        per_token[0] * 1e3,
        per_token[new_tokens - 1] * 1e3,
        new_tokens as f64 / cold_s
    );
    out.push(Entry {
        name: "baby GPT decode".into(),
        shape: format!("B=1 prompt=1 new={new_tokens}"),
        ms: s * 1e3 / new_tokens as f64,
        tokens_per_s: Some(tps),
        cold_tokens_per_s: Some(new_tokens as f64 / cold_s),
        per_token_ms: Some(per_token.iter().map(|s| s * 1e3).collect()),
        note: Some(
            "greedy, no KV cache: each token recomputes the full forward over the growing \
             sequence (what a burn user writes for a hand-written GPT; burn-nn's MhaCache \
             serves its own MultiHeadAttention only); lm_head on the last position; ms is per \
             generated token; each token synced by reading the argmax back; timed on the \
             second of two identical passes, the first (which compiles and autotunes every \
             new sequence length) given as cold_tokens_per_s"
                .into(),
        ),
        ..Default::default()
    });
    out
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peer-burn: {e}");
            std::process::exit(2);
        }
    };

    // One wgpu runtime on the default adapter of the chosen graphics API; `init_with_setup`
    // hands back the wgpu adapter so that the report can name it.
    let (device, setup) = match Device::wgpu_options()
        .graphics_api(args.api)
        .init_with_setup()
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "peer-burn: could not initialise burn's wgpu runtime ({:?}): {e}",
                args.api
            );
            std::process::exit(1);
        }
    };
    let info = setup.adapter.get_info();
    let adapter = info.name.clone();
    // Which shader path cubecl uses on this device: SPIR-V only with the `vulkan-spirv`
    // feature on a Vulkan adapter, WGSL through naga otherwise.
    let compiler = if cfg!(feature = "vulkan-spirv") && info.backend == wgpu::Backend::Vulkan {
        "spirv"
    } else {
        "wgsl"
    };
    let driver = format!("{} {}", info.driver, info.driver_info)
        .trim()
        .to_string();
    eprintln!(
        "peer-burn: burn {BURN_VERSION} on {adapter} ({:?}, {:?}, driver {driver}), shaders: {compiler}",
        info.backend, info.device_type
    );

    let mut results = Vec::new();
    if matches!(args.only, Only::All | Only::Matmul) {
        results.extend(bench_matmul(&device, args.reps));
    }
    if matches!(args.only, Only::All | Only::Step) {
        results.push(bench_step(&device, args.steps));
    }
    if matches!(args.only, Only::All | Only::Decode) {
        results.extend(bench_decode(&device, args.reps));
    }

    let report = Report {
        peer: format!("burn {BURN_VERSION}"),
        adapter,
        backend: format!("{:?}", info.backend),
        driver,
        shader_compiler: compiler,
        burn_features: "wgpu (defaults: fusion, autotune), autodiff, optim",
        dtype: "f32",
        date: today_utc(),
        reps: args.reps,
        steps: args.steps,
        results,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("the report serialises")
    );
}
