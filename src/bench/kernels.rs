//! `wgformer bench kernels`: each kernel at GPT-2 124M shapes (B=4, T=64 by default),
//! timed on the GPU, reported as GFLOP/s (compute-bound kernels) or GB/s (memory-bound
//! ones) and as a fraction of the adapter's pure-FMA ceiling.

use serde::{Deserialize, Serialize};

use super::{time_schedule, time_schedule_min, today};
use crate::error::Result;
use crate::gpu::{DType, GpuContext, Profiler, Schedule, ShaderChecks, Tensor};
use crate::kernels;
use crate::kernels::classifier::{
    classifier_crossentropy_backward, classifier_crossentropy_forward,
    classifier_crossentropy_loss, ClassifierChunk, ClassifierChunks,
};
use crate::kernels::crossentropy::STATS_LEN;
use crate::rng::Rng;

/// One benchmarked launch (or group of launches recorded as one schedule).
/// A case's schedule keeps every tensor it binds alive through its bind groups.
pub struct Case {
    pub name: String,
    pub shape: String,
    /// Floating-point operations per run (0 for pure data movement).
    pub flops: u64,
    /// Bytes read and written per run, counting each tensor once.
    pub bytes: u64,
    pub schedule: Schedule,
}

/// A measured case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    pub name: String,
    pub shape: String,
    pub ms: f64,
    pub gflops: Option<f64>,
    pub gbytes_per_s: Option<f64>,
    /// GFLOP/s as a fraction of the FMA ceiling (compute-bound cases only).
    pub of_peak: Option<f64>,
    /// On CPU adapters, GFLOP/s as a fraction of a short measure of the ceiling taken
    /// right before the case's fastest pass (see [`CeilingBeside`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of_peak_beside: Option<f64>,
    /// Where the case's time goes, launch by launch (`bench kernels --launches`, on
    /// adapters with timestamp queries; copies are not timed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub launches: Vec<LaunchTime>,
}

/// One launch of a case: its label (the kernel, its operands and, for a product bound in
/// chunks, its block) and its GPU time, the median over the replays.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LaunchTime {
    pub label: String,
    pub ms: f64,
}

/// The whole report, as JSON and as a markdown table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub adapter: String,
    pub date: String,
    pub timing: String,
    pub peak_gflops: f64,
    pub results: Vec<Measurement>,
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Adapter: {} — {} — timing: {}\n\nFMA ceiling: {:.1} GFLOP/s\n\n",
            self.adapter, self.date, self.timing, self.peak_gflops
        );
        let beside = self.results.iter().any(|r| r.of_peak_beside.is_some());
        s += "| kernel | shape | ms | GFLOP/s | GB/s | of FMA ceiling |";
        s += match beside {
            true => " of the ceiling beside it |\n|---|---|---:|---:|---:|---:|---:|\n",
            false => "\n|---|---|---:|---:|---:|---:|\n",
        };
        let percent = |v: Option<f64>| v.map_or("".into(), |v| format!("{:.0} %", v * 100.0));
        for r in &self.results {
            let f = |v: Option<f64>, p: usize| v.map_or("".into(), |v| format!("{v:.p$}"));
            s += &format!(
                "| {} | {} | {:.3} | {} | {} | {} |",
                r.name,
                r.shape,
                r.ms,
                f(r.gflops, 1),
                f(r.gbytes_per_s, 2),
                percent(r.of_peak),
            );
            if beside {
                s += &format!(" {} |", percent(r.of_peak_beside));
            }
            s += "\n";
        }
        let with_launches: Vec<_> = self
            .results
            .iter()
            .filter(|r| r.launches.len() > 1)
            .collect();
        if !with_launches.is_empty() {
            s += "\nLaunches of the cases with more than one (GPU time, median):\n\n";
            s += "| kernel | launch | ms | of the case |\n|---|---|---:|---:|\n";
            for r in with_launches {
                let total: f64 = r.launches.iter().map(|l| l.ms).sum();
                for l in &r.launches {
                    s += &format!(
                        "| {} | {} | {:.3} | {:.0} % |\n",
                        r.name,
                        l.label,
                        l.ms,
                        100.0 * l.ms / total.max(f64::MIN_POSITIVE)
                    );
                }
            }
        }
        s
    }
}

fn random(ctx: &GpuContext, rng: &mut Rng, label: &str, shape: &[usize]) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    Tensor::from_f32(ctx, label, shape, &rng.vec_uniform(n, -1.0, 1.0))
}

/// The FMA ceiling in GFLOP/s: the faster of 8 and 16 FMA chains an invocation (16 keep
/// a CPU adapter's FMA units busier; see shaders/peak.wgsl). On a GPU: 2^20 invocations
/// (several waves on the largest GPUs), after half a second of the same work so that
/// the clocks have left their idle state (an H200 idles at 345 MHz and boosts to 1980),
/// the fastest of 5 replays, with the loop's body once and 8 times a trip, whichever is
/// faster. On a CPU adapter: 2^18 invocations, the body once a trip, the median of 3.
pub fn peak_gflops(ctx: &GpuContext) -> Result<f64> {
    let gpu = !ctx.is_cpu();
    let n = if gpu { 1 << 20 } else { 256 * 1024 };
    let out = Tensor::zeros(ctx, "peak", &[n], DType::F32)?;
    let schedule = |chains: u32, unroll: u32| -> Result<(Schedule, u64)> {
        let mut s = Schedule::new("fma_peak");
        let flops = kernels::peak::fma_peak(&mut s, ctx, &out, 2048, chains, unroll)?;
        Ok((s, flops))
    };
    let mut best: f64 = 0.0;
    for chains in [8, 16] {
        if !gpu {
            let (s, flops) = schedule(chains, 1)?;
            let secs = time_schedule(ctx, &s, 3)?;
            best = best.max(flops as f64 / secs * 1e-9);
            continue;
        }
        for unroll in [1, 8] {
            let (s, flops) = schedule(chains, unroll)?;
            super::warm_up(ctx, &s, 0.5);
            let secs = time_schedule_min(ctx, &s, 5)?;
            best = best.max(flops as f64 / secs * 1e-9);
        }
    }
    Ok(best)
}

/// A short measure of the FMA ceiling for CPU adapters, taken right before each
/// compute-bound case: a shared host's speed can swing 2x within minutes, the ceiling's
/// with it, so a fraction against the ceiling at the start of a run moves with the host
/// as much as with the kernel. 2^16 invocations of 16 chains (4.3 GFLOP), the fastest of
/// 2 replays after a warm-up: about half a second a case on lavapipe.
struct CeilingBeside {
    schedule: Schedule,
    flops: u64,
    _out: Tensor,
}

impl CeilingBeside {
    fn new(ctx: &GpuContext) -> Result<Option<Self>> {
        if !ctx.is_cpu() {
            return Ok(None);
        }
        let out = Tensor::zeros(ctx, "peak beside", &[1 << 16], DType::F32)?;
        let mut schedule = Schedule::new("fma_peak beside");
        let flops = kernels::peak::fma_peak(&mut schedule, ctx, &out, 2048, 16, 1)?;
        Ok(Some(CeilingBeside {
            schedule,
            flops,
            _out: out,
        }))
    }

    fn gflops(&self, ctx: &GpuContext) -> Result<f64> {
        Ok(self.flops as f64 / time_schedule_min(ctx, &self.schedule, 2)? * 1e-9)
    }
}

/// Shapes of the benchmark: GPT-2 124M's channels at batch `b` and sequence `t`.
#[derive(Clone, Copy, Debug)]
pub struct BenchShape {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
    pub v: usize,
}

impl Default for BenchShape {
    fn default() -> Self {
        BenchShape {
            b: 4,
            t: 64,
            c: 768,
            nh: 12,
            v: 50257,
        }
    }
}

/// Every kernel case at `sh`.
pub fn kernel_cases(ctx: &GpuContext, sh: BenchShape) -> Result<Vec<Case>> {
    let mut rng = Rng::new(0);
    let mut cases = Vec::new();
    let (bt, c) = (sh.b * sh.t, sh.c);
    let f32b = 4u64;

    // Matmuls of a block and the classifier: out (BT, N) = inp (BT, K) · w (K, N) + bias.
    for (name, k, n) in [
        ("matmul_forward qkv", c, 3 * c),
        ("matmul_forward attn proj", c, c),
        ("matmul_forward fc", c, 4 * c),
        ("matmul_forward mlp proj", 4 * c, c),
    ] {
        let inp = random(ctx, &mut rng, "inp", &[bt, k])?;
        let w = random(ctx, &mut rng, "w", &[k, n])?;
        let bias = random(ctx, &mut rng, "bias", &[n])?;
        let out = Tensor::zeros(ctx, "out", &[bt, n], DType::F32)?;
        let mut s = Schedule::new(name);
        kernels::matmul::matmul_forward(&mut s, ctx, &out, &inp, &w, Some(&bias), bt, k, n)?;
        cases.push(Case {
            name: name.into(),
            shape: format!("M={bt} K={k} N={n}"),
            flops: 2 * (bt * k * n) as u64,
            bytes: f32b * (bt * k + k * n + n + bt * n) as u64,
            schedule: s,
        });
    }

    // The same products with w in f16 (`--precision f16`) and with a and w in f16
    // (`--precision mixed`), where the device has shader-f16; and at M = 1, a decode
    // step's matmul, in both precisions.
    let half = ctx.has_f16();
    for (name, m, k, n) in [
        ("matmul_forward qkv, w f16", bt, c, 3 * c),
        ("matmul_forward fc, w f16", bt, c, 4 * c),
        ("matmul_forward mlp proj, w f16", bt, 4 * c, c),
        ("matmul_forward qkv, a+w f16", bt, c, 3 * c),
        ("matmul_forward fc, a+w f16", bt, c, 4 * c),
        ("matmul_forward mlp proj, a+w f16", bt, 4 * c, c),
        ("matmul_forward fc at M=1 (decode)", 1, c, 4 * c),
        ("matmul_forward fc at M=1 (decode), w f16", 1, c, 4 * c),
    ] {
        let w16 = name.ends_with("w f16");
        let a16 = name.ends_with("a+w f16");
        if w16 && !half {
            continue;
        }
        let inp = match a16 {
            true => {
                Tensor::from_f32_as_f16(ctx, "a16", &[m, k], &rng.vec_uniform(m * k, -1.0, 1.0))?
            }
            false => random(ctx, &mut rng, "inp", &[m, k])?,
        };
        let w = match w16 {
            true => {
                Tensor::from_f32_as_f16(ctx, "w16", &[k, n], &rng.vec_uniform(k * n, -1.0, 1.0))?
            }
            false => random(ctx, &mut rng, "w", &[k, n])?,
        };
        let bias = random(ctx, &mut rng, "bias", &[n])?;
        let out = Tensor::zeros(ctx, "out", &[m, n], DType::F32)?;
        let mut s = Schedule::new(name);
        kernels::matmul::matmul_forward(&mut s, ctx, &out, &inp, &w, Some(&bias), m, k, n)?;
        cases.push(Case {
            name: name.into(),
            shape: format!("M={m} K={k} N={n}"),
            flops: 2 * (m * k * n) as u64,
            bytes: f32b * (n + m * n) as u64 + inp.size_bytes() + w.size_bytes(),
            schedule: s,
        });
    }

    // Layer-sized activations shared by the cases below.
    let (nh, v, t, b) = (sh.nh, sh.v, sh.t, sh.b);
    let n = bt * c;
    let x = random(ctx, &mut rng, "x", &[bt, c])?;
    let dx = random(ctx, &mut rng, "dx", &[bt, c])?;
    let y = Tensor::zeros(ctx, "y", &[bt, c], DType::F32)?;
    let lnw = random(ctx, &mut rng, "ln.weight", &[c])?;
    let lnb = random(ctx, &mut rng, "ln.bias", &[c])?;
    let mean = Tensor::zeros(ctx, "mean", &[bt], DType::F32)?;
    let rstd = Tensor::zeros(ctx, "rstd", &[bt], DType::F32)?;
    let dlnw = Tensor::zeros(ctx, "dln.weight", &[c], DType::F32)?;
    let dlnb = Tensor::zeros(ctx, "dln.bias", &[c], DType::F32)?;
    let mut one = |name: &str,
                   shape: String,
                   flops: u64,
                   bytes: u64,
                   rec: &dyn Fn(&mut Schedule) -> Result<()>|
     -> Result<()> {
        let mut s = Schedule::new(name);
        rec(&mut s)?;
        cases.push(Case {
            name: name.into(),
            shape,
            flops,
            bytes,
            schedule: s,
        });
        Ok(())
    };
    let nbytes = |elems: usize| f32b * elems as u64;

    one("add (residual)", format!("N={n}"), 0, nbytes(3 * n), &|s| {
        kernels::residual::residual_forward(s, ctx, &y, &x, &dx, n)
    })?;
    one(
        "gelu_forward",
        format!("N={}", 4 * n),
        0,
        nbytes(2 * 4 * n),
        &|s| {
            let h = Tensor::zeros(ctx, "h", &[4 * n], DType::F32)?;
            let o = Tensor::zeros(ctx, "o", &[4 * n], DType::F32)?;
            kernels::gelu::gelu_forward(s, ctx, &o, &h, 4 * n)
        },
    )?;
    one(
        "gelu_backward",
        format!("N={}", 4 * n),
        0,
        nbytes(4 * 4 * n),
        &|s| {
            let h = Tensor::zeros(ctx, "h", &[4 * n], DType::F32)?;
            let d = Tensor::zeros(ctx, "d", &[4 * n], DType::F32)?;
            let dh = Tensor::zeros(ctx, "dh", &[4 * n], DType::F32)?;
            kernels::gelu::gelu_backward(s, ctx, &dh, &h, &d, 4 * n)
        },
    )?;
    one(
        "layernorm_forward",
        format!("BT={bt} C={c}"),
        0,
        nbytes(2 * n),
        &|s| {
            kernels::layernorm::layernorm_forward(
                s, ctx, &y, &mean, &rstd, &x, &lnw, &lnb, b, t, c, 1e-5,
            )
        },
    )?;
    one(
        "layernorm_backward",
        format!("BT={bt} C={c}"),
        0,
        nbytes(4 * n),
        &|s| {
            kernels::layernorm::layernorm_backward(
                s, ctx, &y, &dlnw, &dlnb, &dx, &x, &lnw, &mean, &rstd, b, t, c,
            )
        },
    )?;
    let qkv = random(ctx, &mut rng, "qkv", &[bt, 3 * c])?;
    let dqkv = Tensor::zeros(ctx, "dqkv", &[bt, 3 * c], DType::F32)?;
    let stats = Tensor::zeros(ctx, "stats", &[b, nh, t], DType::F32)?;
    // Causal: each of the T rows of a head attends to (t+1) keys, for QKᵀ and for PV.
    let att_flops = 2 * 2 * (b * nh * t * (t + 1) / 2 * (c / nh)) as u64;
    one(
        "attention_forward",
        format!("B={b} T={t} NH={nh} HS={}", c / nh),
        att_flops,
        nbytes(3 * n + n),
        &|s| kernels::attention::attention_forward(s, ctx, &y, &stats, &qkv, b, t, c, nh),
    )?;
    one(
        "attention_backward",
        format!("B={b} T={t} NH={nh} HS={}", c / nh),
        2 * att_flops,
        nbytes(6 * n + 2 * n),
        &|s| {
            kernels::attention::attention_backward(
                s, ctx, &dqkv, &dx, &qkv, &y, &stats, b, t, c, nh,
            )
        },
    )?;
    for (name, k, n_out) in [
        ("matmul_backward fc", c, 4 * c),
        ("matmul_backward mlp proj", 4 * c, c),
    ] {
        let inp = random(ctx, &mut rng, "inp", &[bt, k])?;
        let w = random(ctx, &mut rng, "w", &[k, n_out])?;
        let d = random(ctx, &mut rng, "dout", &[bt, n_out])?;
        let di = Tensor::zeros(ctx, "dinp", &[bt, k], DType::F32)?;
        let dw = Tensor::zeros(ctx, "dw", &[k, n_out], DType::F32)?;
        let db = Tensor::zeros(ctx, "db", &[n_out], DType::F32)?;
        one(
            name,
            format!("M={bt} K={k} N={n_out}"),
            4 * (bt * k * n_out) as u64,
            nbytes(2 * (bt * k + k * n_out + bt * n_out)),
            &|s| {
                kernels::matmul::matmul_backward(
                    s,
                    ctx,
                    &di,
                    &dw,
                    Some(&db),
                    &d,
                    &inp,
                    &w,
                    bt,
                    k,
                    n_out,
                )
            },
        )?;
    }
    let wte = random(ctx, &mut rng, "wte", &[v, c])?;
    let dwte = Tensor::zeros(ctx, "dwte", &[v, c], DType::F32)?;
    let wpe = random(ctx, &mut rng, "wpe", &[t, c])?;
    let dwpe = Tensor::zeros(ctx, "dwpe", &[t, c], DType::F32)?;
    let toks: Vec<i32> = (0..bt).map(|_| rng.below(v as u64) as i32).collect();
    let tokens = Tensor::from_i32(ctx, "tokens", &[b, t], &toks)?;
    one(
        "encoder_forward",
        format!("B={b} T={t} C={c}"),
        0,
        nbytes(3 * n),
        &|s| kernels::encoder::encoder_forward(s, ctx, &y, &tokens, &wte, &wpe, b, t, c, v),
    )?;
    one(
        "encoder_backward",
        format!("B={b} T={t} C={c}"),
        0,
        nbytes(3 * n),
        &|s| kernels::encoder::encoder_backward(s, ctx, &dwte, &dwpe, &dx, &tokens, b, t, c, v),
    )?;
    let logits = Tensor::zeros(ctx, "logits", &[bt, v], DType::F32)?;
    let cls = 2 * (bt * c * v) as u64;
    one(
        "classifier_forward",
        format!("M={bt} C={c} V={v}"),
        cls,
        nbytes(v * c + bt * v),
        &|s| kernels::matmul::classifier_forward(s, ctx, &logits, &x, &wte, bt, c, v),
    )?;
    one(
        "classifier_backward",
        format!("M={bt} C={c} V={v}"),
        2 * cls,
        nbytes(2 * v * c + bt * v),
        &|s| kernels::matmul::classifier_backward(s, ctx, &y, &dwte, &logits, &x, &wte, bt, c, v),
    )?;
    let targets = Tensor::from_i32(ctx, "targets", &[b, t], &toks)?;
    // The classifier as training runs it where whole logits would be large (GPT-2 at
    // B·T = 4096: 823 MB): fused with the loss, Vc vocabulary columns at a time, the
    // backward recomputing each chunk's logits (three products of the classifier's size).
    if let Some(vc) = ClassifierChunk::Auto.columns(bt, v)? {
        let chunks = ClassifierChunks::new(ctx, "bench.", bt, c, vc)?;
        let chunk = Tensor::zeros(ctx, "logits chunk", &[bt, vc], DType::F32)?;
        let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32)?;
        let stats = Tensor::zeros(ctx, "loss stats", &[STATS_LEN], DType::F32)?;
        let shape = format!("M={bt} C={c} V={v} Vc={vc}");
        one(
            "classifier_crossentropy_forward (chunked)",
            shape.clone(),
            cls,
            nbytes(v * c + bt * c),
            &|s| {
                classifier_crossentropy_forward(
                    s, ctx, &chunks, &chunk, &x, &wte, None, &targets, bt, c, v,
                )?;
                classifier_crossentropy_loss(s, ctx, &losses, &stats, &chunks, &targets, bt, v)
            },
        )?;
        one(
            "classifier_crossentropy_backward (chunked, recompute)",
            shape,
            3 * cls,
            nbytes(3 * v * c + 2 * bt * c),
            &|s| {
                classifier_crossentropy_backward(
                    s, ctx, &y, &dwte, &chunks, &chunk, &x, &wte, None, &targets, &stats, bt, c, v,
                    1.0,
                )
            },
        )?;
    }
    if half {
        // The f16 path's refresh of wte's copy after an update (4 bytes read, 2 written).
        let wte16 = Tensor::zeros(ctx, "wte16", &[v, c], DType::F16)?;
        one(
            "cast_f32_to_f16 (wte)",
            format!("N={}", v * c),
            0,
            6 * (v * c) as u64,
            &|s| kernels::cast::cast_f32_to_f16(s, ctx, &wte16, &wte, v * c),
        )?;
    }
    let losses = Tensor::zeros(ctx, "losses", &[bt], DType::F32)?;
    one(
        "crossentropy_forward",
        format!("BT={bt} V={v}"),
        0,
        nbytes(bt * v),
        &|s| kernels::crossentropy::crossentropy_forward(s, ctx, &losses, &logits, &targets, bt, v),
    )?;
    // AdamW over one MLP weight (C × 4C), the shape of most of GPT-2's parameters.
    let np = c * 4 * c;
    let p = random(ctx, &mut rng, "param", &[np])?;
    let g = random(ctx, &mut rng, "grad", &[np])?;
    let m1 = Tensor::zeros(ctx, "m", &[np], DType::F32)?;
    let v1 = Tensor::zeros(ctx, "v", &[np], DType::F32)?;
    let step = kernels::adamw::AdamwStep::tensor(ctx, "step")?;
    kernels::adamw::AdamwStep::new(1e-3, 0.9, 0.95, 1e-8, 1)?.write(ctx, &step)?;
    let gn = kernels::gradnorm::GradNorm::new(ctx, &[&g])?;
    one("gradnorm", format!("N={np}"), 0, nbytes(np), &|s| {
        gn.record(s, ctx, &[&g], 1.0)
    })?;
    one("adamw_update", format!("N={np}"), 0, nbytes(7 * np), &|s| {
        kernels::adamw::adamw_update(s, ctx, &p, &m1, &v1, &g, &step, &gn.state, np, 0.1)
    })?;
    Ok(cases)
}

/// Run every case and build the report: each case's median of `reps` replays, the
/// fastest of `passes` passes over all the cases (and the ceiling the fastest of as many).
/// With `launches` (and timestamp queries), each case's launches are timed one by one
/// too, over `reps` more replays.
/// More than one pass is for hosts whose speed swings for seconds at a time (a shared VM
/// can halve a CPU adapter's matmuls while its FMA ceiling holds): a pass that caught a
/// slow spell does not stand for the kernel. On CPU adapters each compute-bound case is
/// also set against a short measure of the ceiling taken right before it
/// (`of_peak_beside`), for the spells that slow the ceiling too.
pub fn run_kernels(
    ctx: &GpuContext,
    sh: BenchShape,
    reps: usize,
    passes: usize,
    launches: bool,
) -> Result<Report> {
    let passes = passes.max(1);
    let cases = kernel_cases(ctx, sh)?;
    let mut peak: f64 = 0.0;
    let mut best = vec![f64::INFINITY; cases.len()];
    let ceiling_beside = CeilingBeside::new(ctx)?;
    let mut beside = vec![None; cases.len()];
    for _ in 0..passes {
        peak = peak.max(peak_gflops(ctx)?);
        for (i, case) in cases.iter().enumerate() {
            let local = match &ceiling_beside {
                Some(c) if case.flops > 0 => Some(c.gflops(ctx)?),
                _ => None,
            };
            let secs = time_schedule(ctx, &case.schedule, reps)?;
            if secs < best[i] {
                best[i] = secs;
                beside[i] = local;
            }
        }
    }
    let mut results = Vec::with_capacity(cases.len());
    for ((case, secs), beside) in cases.into_iter().zip(best).zip(beside) {
        let gflops = (case.flops > 0).then(|| case.flops as f64 / secs * 1e-9);
        let launches = match launches {
            true => launch_times(ctx, &case.schedule, reps)?,
            false => Vec::new(),
        };
        results.push(Measurement {
            name: case.name,
            shape: case.shape,
            ms: secs * 1e3,
            gflops,
            gbytes_per_s: Some(case.bytes as f64 / secs * 1e-9),
            of_peak: gflops.map(|g| g / peak),
            of_peak_beside: gflops.zip(beside).map(|(g, c)| g / c),
            launches,
        });
    }
    let per_replay = if ctx.has_timestamps() {
        "GPU timestamps per launch, median"
    } else {
        "wall clock per replay, median"
    };
    Ok(Report {
        adapter: ctx.adapter_name(),
        date: today(),
        timing: {
            let mut t = format!("{per_replay} of {reps}");
            if passes > 1 {
                t += &format!(", fastest of {passes} passes");
            }
            if ctx.shader_checks() != ShaderChecks::default() {
                t += &format!(
                    "; shader runtime checks: {}",
                    ctx.shader_checks().describe()
                );
            }
            t
        },
        peak_gflops: peak,
        results,
    })
}

/// Each launch of `s` with its GPU time, the median of `reps` profiled replays; empty
/// without timestamp queries.
pub fn launch_times(ctx: &GpuContext, s: &Schedule, reps: usize) -> Result<Vec<LaunchTime>> {
    let Some(profiler) = Profiler::new(ctx, s) else {
        return Ok(Vec::new());
    };
    let mut runs = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        s.run_profiled(ctx, &profiler);
        runs.push(ctx.block_on(profiler.read(ctx))?);
    }
    let launches = runs[0].len();
    Ok((0..launches)
        .map(|i| {
            let mut ns: Vec<f64> = runs.iter().map(|r| r[i].nanos).collect();
            ns.sort_by(f64::total_cmp);
            LaunchTime {
                label: runs[0][i].label.clone(),
                ms: ns[ns.len() / 2] * 1e-6,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(beside: Option<f64>) -> Report {
        let m = |name: &str, gflops: Option<f64>, beside: Option<f64>| Measurement {
            name: name.into(),
            shape: "M=2".into(),
            ms: 1.0,
            gflops,
            gbytes_per_s: Some(1.0),
            of_peak: gflops.map(|g| g / 40.0),
            of_peak_beside: beside,
            launches: Vec::new(),
        };
        Report {
            adapter: "a".into(),
            date: "d".into(),
            timing: "t".into(),
            peak_gflops: 40.0,
            results: vec![m("mm", Some(20.0), beside), m("add", None, None)],
        }
    }

    /// Cells of each table row (the header, its rule, then one row per case).
    fn cells(md: &str) -> Vec<usize> {
        md.lines()
            .filter(|l| l.starts_with('|'))
            .map(|l| l.matches('|').count() - 1)
            .collect()
    }

    #[test]
    fn the_ceiling_beside_each_case_is_a_column_only_where_measured() {
        let with = report(Some(0.25)).markdown();
        assert!(with.contains("of the ceiling beside it"), "{with}");
        assert!(with.contains("| 50 % | 25 % |"), "{with}");
        assert_eq!(cells(&with), vec![7; 4], "{with}");
        let without = report(None).markdown();
        assert!(!without.contains("beside"), "{without}");
        assert_eq!(cells(&without), vec![6; 4], "{without}");
        let json = serde_json::to_string(&report(None)).unwrap();
        assert!(!json.contains("of_peak_beside"), "{json}");
    }
}
