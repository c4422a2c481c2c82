//! Autotuning of the matmul kernel family, once per adapter, cached on disk.
//!
//! Which kernel runs matmuls fastest depends on the adapter more than on anything a
//! device reports: on a GPU the tiled kernel (workgroup memory, 4×4 or 8×8 register blocks), on
//! a CPU adapter such as lavapipe the subgroup kernel (register shuffles instead of
//! workgroup memory and barriers) or the row kernel where there are no subgroups. With
//! `WGFORMER_MATMUL` unset or `auto`, the first context opened on an adapter times every
//! family it can run on the two products that dominate a training step (a layer's
//! forward, out = a · w, and its weight gradient, dw += aᵀ · dout), the tiled kernel at
//! each of its tile shapes (`TileConfig::CANDIDATES`), and keeps the fastest family and
//! the fastest tile shape (which the tiled kernel uses whenever it runs). Candidates are
//! timed in interleaved rounds, each keeping its fastest, so that a host whose speed
//! swings for seconds at a time cannot hand the choice to whichever ran in a fast spell;
//! the choice is written to `matmul-tune.json` in the cache directory (`WGFORMER_CACHE_DIR`,
//! else `$XDG_CACHE_HOME/wgformer`, else `~/.cache/wgformer`) under a key naming the
//! adapter, its driver and a hash of the matmul shaders, so a driver update or a shader
//! change tunes again. `WGFORMER_TUNE=0` skips tuning and keeps the device-type guess.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::matmul::{Gemm, TileConfig};
use super::shaders::{MATMUL, MATMUL_SUBGROUP};
use crate::gpu::{GpuContext, MatmulKernel, Schedule, ShaderChecks, Tensor};
use crate::rng::Rng;

/// One tuned adapter: the family chosen, the tiled kernel's tile shape, and what each
/// candidate measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuneEntry {
    pub kernel: String,
    /// The fastest tile shape of the tiled kernel (used whenever it runs).
    #[serde(default = "default_tile")]
    pub tile: TileConfig,
    pub date: String,
    /// GFLOP/s of each candidate over the tuning products: each family at its best, and
    /// the tiled kernel at every tile shape ("tiled 64x64/16").
    pub gflops: BTreeMap<String, f64>,
}

fn default_tile() -> TileConfig {
    TileConfig::DEFAULT
}

/// The tuning products: (M, K, N) of the forward and of the weight gradient, on a CPU
/// adapter (a fraction of a second for each family there).
const SHAPE_CPU: (usize, usize, usize) = (384, 256, 256);

/// The same on a GPU: GPT-2's MLP at B·T = 2048, about 19 GFLOP for the pair, so that a
/// product takes milliseconds rather than the microseconds a submit costs, and fills a
/// large GPU's multiprocessors several times over with the largest tiles (128×128: 16×24
/// workgroups).
const SHAPE_GPU: (usize, usize, usize) = (2048, 768, 3072);

/// The name a tile shape's figure has in [`TuneEntry::gflops`]: "tiled 64x64/16" (4×4
/// register blocks), "tiled 128x128/8 rb8" (8×8).
pub fn tile_key(t: TileConfig) -> String {
    let (tm, tn) = t.tile();
    let key = match t.rb {
        4 => format!("tiled {tm}x{tn}/{}", t.tk),
        rb => format!("tiled {tm}x{tn}/{} rb{rb}", t.tk),
    };
    if t.element {
        key + " element"
    } else {
        key
    }
}

/// The cache file's path.
pub fn cache_path() -> Option<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("WGFORMER_CACHE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("wgformer")
    } else {
        PathBuf::from(std::env::var_os("HOME")?).join(".cache/wgformer")
    };
    Some(dir.join("matmul-tune.json"))
}

/// The key of `ctx`'s adapter in the cache.
pub fn cache_key(ctx: &GpuContext) -> String {
    adapter_key(&ctx.info, ctx.shader_checks())
}

/// The cached choice for an adapter, if it was tuned with `checks` (for `wgformer info`).
pub fn cached(info: &wgpu::AdapterInfo, checks: ShaderChecks) -> Option<TuneEntry> {
    read_cache(&cache_path()?).remove(&adapter_key(info, checks))
}

/// The cache key of an adapter: its name, backend and driver, the shaders' hash, and the
/// runtime checks they are compiled with (which may change what is fastest).
pub fn adapter_key(info: &wgpu::AdapterInfo, checks: ShaderChecks) -> String {
    // FNV-1a over the matmul shaders: an edit to a kernel invalidates the choice.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in MATMUL.source.bytes().chain(MATMUL_SUBGROUP.source.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let i = info;
    format!(
        "{} | {:?} | {} {} | shaders {h:016x}{}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        match checks {
            ShaderChecks::Trusted => String::new(),
            other => format!(" | shader checks {}", other.name()),
        }
    )
}

fn read_cache(path: &PathBuf) -> BTreeMap<String, TuneEntry> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The tuned family and tile shape for `ctx`'s adapter: from the cache, or measured now
/// and cached. `None` when tuning is off or failed (the caller keeps its guess); never an
/// error, since a slow kernel is better than no context.
pub fn tuned_matmul_kernel(ctx: &GpuContext) -> Option<(MatmulKernel, TileConfig)> {
    if std::env::var("WGFORMER_TUNE").is_ok_and(|v| v == "0") {
        return None;
    }
    let key = cache_key(ctx);
    let path = cache_path();
    if let Some(e) = path.as_ref().and_then(|p| read_cache(p).remove(&key)) {
        if let Ok(k) = e.kernel.parse::<MatmulKernel>() {
            return Some((k, e.tile));
        }
    }
    let entry = match measure(ctx) {
        Ok(e) => e,
        Err(e) => {
            log::warn!("matmul tuning failed, keeping the default kernel: {e}");
            return None;
        }
    };
    log::info!(
        "matmul tuning on {}: {} ({:?})",
        ctx.adapter_name(),
        entry.kernel,
        entry.gflops
    );
    let chosen = entry.kernel.parse().ok().map(|k| (k, entry.tile));
    if let Some(path) = path {
        // Read again and merge, then replace the file atomically: other processes may be
        // tuning other adapters at the same time.
        let mut all = read_cache(&path);
        all.insert(key, entry);
        let tmp = path.with_extension(format!("json.{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| {
                std::fs::write(&tmp, serde_json::to_string_pretty(&all).unwrap_or_default())
            })
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            log::warn!("could not write {}: {e}", path.display());
        }
    }
    chosen
}

/// Time every family `ctx` can run on the tuning products; the fastest wins.
pub fn measure(ctx: &GpuContext) -> crate::Result<TuneEntry> {
    let (m, k, n) = if ctx.is_cpu() { SHAPE_CPU } else { SHAPE_GPU };
    let mut rng = Rng::new(11);
    let mut t = |label: &str, len: usize| {
        Tensor::from_f32(ctx, label, &[len], &rng.vec_uniform(len, -1.0, 1.0))
    };
    let (a, w, out, dw) = (
        t("tune.a", m * k)?,
        t("tune.w", k * n)?,
        t("tune.out", m * n)?,
        t("tune.dw", k * n)?,
    );
    // Every family the adapter runs (SwiftShader: the tiled one alone).
    let candidates: Vec<MatmulKernel> = [
        MatmulKernel::Tiled,
        MatmulKernel::Rows,
        MatmulKernel::Subgroup,
    ]
    .into_iter()
    .filter(|&k| ctx.runs_matmul_family(k))
    .collect();
    let flops = 2.0 * 2.0 * (m * k * n) as f64;
    let mut gflops = BTreeMap::new();
    // The tuning products with `rows` rows of a and out (m, or fewer for the sweep),
    // recorded with `kernel` and the context's tile shape.
    let record = |kernel: MatmulKernel, rows: usize| -> crate::Result<Schedule> {
        ctx.set_matmul_kernel(kernel);
        let (a, out) = if rows == m {
            (a.clone(), out.clone())
        } else {
            let part = |t: &Tensor, cols: usize| Tensor {
                shape: vec![rows, cols],
                ..t.clone()
            };
            (part(&a, k), part(&out, n))
        };
        let mut s = Schedule::new("matmul tuning");
        Gemm::default().record(&mut s, ctx, &out, &a, &w, None, rows, k, n)?;
        let dw_form = Gemm {
            trans_a: true,
            accumulate: true,
            ..Gemm::default()
        };
        dw_form.record(&mut s, ctx, &dw, &a, &out, None, k, rows, n)?;
        Ok(s)
    };
    let rounds = if ctx.is_cpu() { 5 } else { 7 };
    // The tiled kernel at every tile shape, then the family at its best shape. A CPU
    // adapter, where the tiled kernel runs at a fraction of a GFLOP/s and will not be
    // chosen, times the shapes on a quarter of the rows so a first run stays short.
    let sweep_rows = if ctx.is_cpu() { m / 4 } else { m };
    if !ctx.is_cpu() {
        // Half a second of work first, so that the first candidates are not timed at the
        // idle clocks (an H200's 345 MHz against its 1980) and the last at full speed.
        ctx.set_tile_config(TileConfig::DEFAULT);
        let s = record(MatmulKernel::Tiled, m)?;
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < 0.5 {
            s.run(ctx);
            let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }
    let sweep = TileConfig::CANDIDATES
        .iter()
        .map(|&t| {
            ctx.set_tile_config(t);
            record(MatmulKernel::Tiled, sweep_rows)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let sweep_flops = flops * (sweep_rows as f64 / m as f64);
    let mut tile = TileConfig::DEFAULT;
    let mut best_shape = 0.0;
    for (t, secs) in TileConfig::CANDIDATES
        .into_iter()
        .zip(time_interleaved(ctx, &sweep, rounds))
    {
        let g = sweep_flops / secs * 1e-9;
        gflops.insert(tile_key(t), g);
        if g > best_shape {
            (best_shape, tile) = (g, t);
        }
    }
    ctx.set_tile_config(tile);
    // The families; the tiled kernel's figure is its best shape's where the sweep ran
    // the whole products.
    let timed: Vec<MatmulKernel> = candidates
        .into_iter()
        .filter(|&kernel| kernel != MatmulKernel::Tiled || sweep_rows != m)
        .collect();
    if sweep_rows == m {
        gflops.insert("tiled".into(), best_shape);
    }
    let families = timed
        .iter()
        .map(|&kernel| record(kernel, m))
        .collect::<crate::Result<Vec<_>>>()?;
    for (kernel, secs) in timed.iter().zip(time_interleaved(ctx, &families, rounds)) {
        gflops.insert(format!("{kernel:?}").to_lowercase(), flops / secs * 1e-9);
    }
    let best = gflops
        .iter()
        .filter(|(k, _)| !k.contains(' '))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "tiled".into());
    Ok(TuneEntry {
        kernel: best,
        tile,
        date: crate::bench::today(),
        gflops,
    })
}

/// The fastest wall-clock seconds of each schedule over `rounds` rounds that replay every
/// schedule once in turn, after one replay each that compiles and warms up. Interleaved,
/// so that a host whose speed swings (a shared VM can halve a CPU adapter's speed for
/// seconds) slows every candidate alike rather than whichever it caught.
fn time_interleaved(ctx: &GpuContext, schedules: &[Schedule], rounds: usize) -> Vec<f64> {
    let wait = || {
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    };
    for s in schedules {
        s.run(ctx);
        wait();
    }
    let mut best = vec![f64::INFINITY; schedules.len()];
    for _ in 0..rounds {
        for (s, best) in schedules.iter().zip(&mut best) {
            let t0 = Instant::now();
            s.run(ctx);
            wait();
            *best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    best
}
