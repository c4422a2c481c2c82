//! `wgformer bench all`: the kernels, training steps and generation in one run on one
//! adapter, and — given a peer's report from the same adapter (benches/peer-burn, run by
//! scripts/bench-peers) — each comparable figure set beside the peer's with the ratio.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::StepReport;
use super::{run_generate, run_kernels, run_step, today, BenchShape, GenerateReport, Report};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::infer::Model;
use crate::model::gpt2::Gpt2;
use crate::model::half::Precision;
use crate::model::Gpt2Config;

/// What one suite run measures.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    /// Kernel shapes (GPT-2 124M channels at this B, T).
    pub kernels: BenchShape,
    /// Timed replays per kernel.
    pub reps: usize,
    /// Training steps: (preset, B, T) each.
    pub steps: Vec<(String, usize, usize)>,
    /// Timed steps per training-step case.
    pub timed_steps: usize,
    /// Generation: (preset, prompt tokens, new tokens) each.
    pub generate: Vec<(String, usize, usize)>,
}

/// One peer measurement (the JSON benches/peer-burn writes).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerResult {
    pub name: String,
    #[serde(default)]
    pub shape: String,
    pub ms: f64,
    #[serde(default)]
    pub gflops: Option<f64>,
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    #[serde(default)]
    pub note: Option<String>,
}

/// A peer's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerReport {
    pub peer: String,
    pub adapter: String,
    pub date: String,
    pub results: Vec<PeerResult>,
}

impl PeerReport {
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!(
                "{}: not a peer benchmark report ({{peer, adapter, date, results: [{{name, \
                 ms, ...}}]}}): {e}",
                path.display()
            ))
        })
    }
}

/// One figure of ours beside the peer's: `speedup` = how many times faster wgformer is
/// (the peer's time over ours).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub what: String,
    pub wgformer_ms: f64,
    pub peer_ms: f64,
    pub speedup: f64,
}

/// Everything one suite run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SuiteReport {
    pub adapter: String,
    pub date: String,
    pub kernels: Report,
    pub steps: Vec<StepReport>,
    pub generate: Vec<GenerateReport>,
    pub peer: Option<PeerReport>,
    pub comparison: Vec<Comparison>,
}

/// Run the whole suite on the adapter `opts` selects (a device per part, sized for it).
pub fn run_suite(opts: &GpuOptions, o: &SuiteOptions) -> Result<SuiteReport> {
    let opts = GpuOptions {
        profile: true,
        ..opts.clone()
    };
    let ctx = pollster::block_on(GpuContext::new(&opts))?;
    eprintln!("bench: kernels on {}", ctx.adapter_name());
    let kernels = run_kernels(&ctx, o.kernels, o.reps.max(1), 1, false)?;
    drop(ctx);
    let mut steps = Vec::new();
    for (preset, b, t) in &o.steps {
        let cfg = Gpt2Config::preset(preset, None)?;
        let ctx = pollster::block_on(GpuContext::with_needs(&opts, &Gpt2::needs(&cfg, *b, *t)))?;
        eprintln!("bench: {preset} training step at B={b}, T={t}");
        steps.push(run_step(
            &ctx,
            &cfg,
            preset,
            *b,
            *t,
            o.timed_steps,
            Precision::F32,
        )?);
    }
    let mut generate = Vec::new();
    for (preset, prompt, new) in &o.generate {
        let cfg = Gpt2Config::preset(preset, None)?;
        let needs = crate::infer::model::needs(&cfg);
        let ctx = Arc::new(pollster::block_on(GpuContext::with_needs(&opts, &needs))?);
        let gpt2 = Gpt2::init(&ctx, cfg, 1)?;
        let name = format!("{preset} (random init)");
        let model = Model::from_parts(ctx.clone(), gpt2.clone(), None, name.clone());
        eprintln!("bench: {preset} generation, {prompt} prompt + {new} new tokens");
        generate.push(run_generate(Arc::new(model), *prompt, *new, false)?);
        // The same with the matmuls reading f16 weights, where the adapter can.
        if ctx.has_f16() {
            let model = Model::from_parts(ctx.clone(), gpt2, None, format!("{name} f16"));
            let model = model.with_precision(Precision::F16)?;
            eprintln!("bench: the same in f16");
            generate.push(run_generate(Arc::new(model), *prompt, *new, false)?);
        }
    }
    Ok(SuiteReport {
        adapter: kernels.adapter.clone(),
        date: today(),
        kernels,
        steps,
        generate,
        peer: None,
        comparison: Vec::new(),
    })
}

impl SuiteReport {
    /// Set the peer's figures beside ours: the GPT-2-shape matmuls (by shape), the baby
    /// GPT's training step, its prefill and its decode (by name).
    pub fn compare_with(&mut self, peer: PeerReport) {
        let mut out = Vec::new();
        let find = |key: &str| {
            peer.results
                .iter()
                .find(|r| r.name.to_lowercase().contains(key))
        };
        for m in &self.kernels.results {
            let Some(kind) = m.name.strip_prefix("matmul_forward ") else {
                continue;
            };
            // The peer's matmuls are f32: set only ours in f32 beside them.
            if kind.ends_with("w f16") {
                continue;
            }
            if let Some(p) = peer
                .results
                .iter()
                .find(|r| same_shape(&r.shape, &m.shape) && r.name.contains("matmul"))
            {
                out.push(cmp(format!("matmul {kind} ({})", m.shape), m.ms, p.ms));
            }
        }
        if let (Some(ours), Some(p)) = (self.steps.iter().find(|s| s.model == "baby"), find("step"))
        {
            out.push(cmp(
                format!("baby GPT training step, B={} T={}", ours.batch, ours.seq),
                ours.ms_per_step,
                p.ms,
            ));
        }
        // The peer runs in f32: compare our f32 runs.
        let baby = || {
            self.generate
                .iter()
                .filter(|g| g.model.starts_with("baby") && !g.model.ends_with(" f16"))
        };
        // The prefill beside the peer's is our longest baby prompt (the peer's is T = 64).
        if let Some(ours) = baby().max_by_key(|g| g.prompt_tokens) {
            if let Some(p) = find("prefill").and_then(|p| p.tokens_per_s) {
                out.push(cmp(
                    format!(
                        "baby GPT prefill, ms per token (ours: {} tokens)",
                        ours.prompt_tokens
                    ),
                    1e3 / ours.prefill_tokens_per_s,
                    1e3 / p,
                ));
            }
        }
        // The decode: our run with the most decode steps.
        if let Some(ours) = baby().max_by_key(|g| g.decode_tokens) {
            if let Some(p) = find("decode").and_then(|p| p.tokens_per_s) {
                out.push(cmp(
                    "baby GPT decode, ms per token".into(),
                    ours.ms_per_decode_step,
                    1e3 / p,
                ));
            }
        }
        self.comparison = out;
        self.peer = Some(peer);
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("# wgformer bench — {} — {}\n\n", self.adapter, self.date);
        s += "## Kernels\n\n";
        s += &self.kernels.markdown();
        s += "\n## Training steps\n\n";
        s += "| model | B × T | ms/step | tokens/s | loss |\n|---|---|---:|---:|---|\n";
        for r in &self.steps {
            s += &format!(
                "| {} | {} × {} | {:.1} | {:.0} | {:.3} → {:.3} |\n",
                r.model, r.batch, r.seq, r.ms_per_step, r.tokens_per_s, r.first_loss, r.last_loss
            );
        }
        s += "\n## Generation (KV cache, greedy)\n\n";
        s += "| model | prompt | prefill tok/s | decode tok/s | ms/decode step | \
              one by one: median / slowest ms | launches/step |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|\n";
        for g in &self.generate {
            s += &format!(
                "| {} | {} | {:.1} | {:.2} | {:.2} | {:.2} / {:.2} | {} |\n",
                g.model,
                g.prompt_tokens,
                g.prefill_tokens_per_s,
                g.decode_tokens_per_s,
                g.ms_per_decode_step,
                g.decode_step_ms_median,
                g.decode_step_ms_max,
                g.launches_per_step
            );
        }
        for r in &self.steps {
            if !r.profile.is_empty() {
                s += &format!(
                    "\n## Where a {} step's forward + backward goes\n\n",
                    r.model
                );
                s += &profile_table(&r.profile);
            }
        }
        for g in &self.generate {
            if !g.profile.is_empty() {
                s += &format!("\n## Where a {} decode step goes\n\n", g.model);
                s += &profile_table(&g.profile);
            }
        }
        if let Some(p) = &self.peer {
            let ours = self.adapter.split(" (").next().unwrap_or(&self.adapter);
            if !p.adapter.contains(ours) {
                s += &format!(
                    "\n**Warning: the peer ran on {:?}, not on {ours:?}; the ratios below \
                     compare different adapters.**\n",
                    p.adapter
                );
            }
            s += &format!(
                "\n## Against {} (adapter: {}, {})\n\n| figure | wgformer ms | {} ms | wgformer \
                 speedup |\n|---|---:|---:|---:|\n",
                p.peer, p.adapter, p.date, p.peer
            );
            for c in &self.comparison {
                s += &format!(
                    "| {} | {:.2} | {:.2} | {:.2}x |\n",
                    c.what, c.wgformer_ms, c.peer_ms, c.speedup
                );
            }
        }
        s
    }
}

fn cmp(what: String, ours: f64, peer: f64) -> Comparison {
    Comparison {
        what,
        wgformer_ms: ours,
        peer_ms: peer,
        speedup: peer / ours.max(1e-12),
    }
}

/// "M=256 K=768 N=2304" in any order and spacing.
fn same_shape(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let mut v: Vec<String> = s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| t.to_uppercase())
            .collect();
        v.sort();
        v
    };
    !a.is_empty() && norm(a) == norm(b)
}

fn profile_table(profile: &[(String, usize, f64)]) -> String {
    let total: f64 = profile.iter().map(|p| p.2).sum();
    let mut s = "| kernel | launches | ms | share |\n|---|---:|---:|---:|\n".to_string();
    for (k, n, ms) in profile {
        s += &format!("| {k} | {n} | {ms:.2} | {:.1} % |\n", 100.0 * ms / total);
    }
    s
}
