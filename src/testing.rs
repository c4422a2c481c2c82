//! The kernel test harness: comparison with a useful failure message, and the choice of
//! adapters GPU tests run on. By default a test runs on the adapter `GpuOptions::from_env`
//! selects; `WGFORMER_TEST_ADAPTERS=all` runs it on every adapter found instead. With no
//! adapter, tests fail (never skip) with instructions for installing one.

#[cfg(not(target_arch = "wasm32"))]
use crate::error::NO_ADAPTER_HINT;
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::{list_adapters, GpuContext, GpuOptions, Needs};

/// Result of a passing comparison.
#[derive(Clone, Copy, Debug)]
pub struct Closeness {
    pub max_abs: f32,
    pub max_rel: f32,
}

/// Check `|gpu - reference| <= atol + rtol * |reference|` elementwise. On failure, the
/// error names the tensor, the first failing index with both values, and the max error.
pub fn check_close(
    name: &str,
    gpu: &[f32],
    reference: &[f32],
    atol: f32,
    rtol: f32,
) -> Result<Closeness, String> {
    if gpu.len() != reference.len() {
        return Err(format!(
            "{name}: length {} differs from the reference's {}",
            gpu.len(),
            reference.len()
        ));
    }
    let (mut max_abs, mut max_rel) = (0f32, 0f32);
    let mut first_bad = None;
    let mut bad = 0usize;
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let d = (g - r).abs();
        let ok = d <= atol + rtol * r.abs();
        if !ok || !g.is_finite() {
            bad += 1;
            first_bad.get_or_insert(i);
        }
        if d.is_nan() {
            max_abs = f32::NAN;
        } else {
            max_abs = max_abs.max(d);
            max_rel = max_rel.max(d / r.abs().max(f32::MIN_POSITIVE));
        }
    }
    match first_bad {
        None => Ok(Closeness { max_abs, max_rel }),
        Some(i) => Err(format!(
            "{name}: {bad} of {} elements differ (atol {atol:e}, rtol {rtol:e}); first at index \
             {i}: gpu {} vs reference {}; max |Δ| = {max_abs:e}",
            gpu.len(),
            gpu[i],
            reference[i]
        )),
    }
}

/// Widen GPU results for comparison with an f64 reference, or narrow a reference.
pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Check an analytic gradient against central finite differences of `loss`, all in f64.
/// `x` is the point; `analytic[i]` must be ∂loss/∂x[i]. Every element is probed when
/// `x` has at most `max_probes` elements, otherwise an evenly spaced subset is.
/// Passes when `|analytic - numeric| <= tol * (1 + |numeric|)`.
pub fn check_gradient(
    name: &str,
    x: &[f64],
    analytic: &[f64],
    mut loss: impl FnMut(&[f64]) -> f64,
    max_probes: usize,
) -> Result<(), String> {
    const EPS: f64 = 1e-6;
    const TOL: f64 = 1e-5;
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let mut probe = x.to_vec();
    let stride = x.len().div_ceil(max_probes.max(1)).max(1);
    for i in (0..x.len()).step_by(stride) {
        probe[i] = x[i] + EPS;
        let up = loss(&probe);
        probe[i] = x[i] - EPS;
        let down = loss(&probe);
        probe[i] = x[i];
        let numeric = (up - down) / (2.0 * EPS);
        if (analytic[i] - numeric).abs() > TOL * (1.0 + numeric.abs()) {
            return Err(format!(
                "{name}: d/dx[{i}] analytic {} vs finite difference {numeric}",
                analytic[i]
            ));
        }
    }
    Ok(())
}

/// A whole model's gradients along one direction: a random unit direction (drawn from
/// `seed`, one tensor after another) over the parameter tensors `pick` selects (by index;
/// the others stay put), dL/dε from `grads` (every parameter's gradient at `values`), and
/// the central difference (L(θ + εd) − L(θ − εd)) / 2ε, ε = 1e-2, of `loss_at`, which gets
/// the moved parameters. Returns (from the gradients, by differences).
pub fn directional_derivative(
    values: &[Vec<f32>],
    grads: &[Vec<f32>],
    seed: u64,
    pick: impl Fn(usize) -> bool,
    mut loss_at: impl FnMut(&[Vec<f32>]) -> f64,
) -> (f64, f64) {
    let mut rng = crate::rng::Rng::new(seed);
    let dir: Vec<Vec<f32>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| match pick(i) {
            true => rng.vec_normal(v.len(), 1.0),
            false => vec![0.0; v.len()],
        })
        .collect();
    let norm = dir
        .iter()
        .flatten()
        .map(|&x| (x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let dot: f64 = grads
        .iter()
        .flatten()
        .zip(dir.iter().flatten())
        .map(|(&g, &d)| g as f64 * d as f64 / norm)
        .sum();
    let eps = 1e-2;
    let mut at = |sign: f64| {
        let moved: Vec<Vec<f32>> = values
            .iter()
            .zip(&dir)
            .map(|(v, d)| {
                v.iter()
                    .zip(d)
                    .map(|(&a, &b)| (a as f64 + sign * eps * b as f64 / norm) as f32)
                    .collect()
            })
            .collect();
        loss_at(&moved)
    };
    let fd = (at(1.0) - at(-1.0)) / (2.0 * eps);
    (dot, fd)
}

/// [`check_gradient`], panicking with its message on failure.
#[track_caller]
pub fn assert_gradient(
    name: &str,
    x: &[f64],
    analytic: &[f64],
    loss: impl FnMut(&[f64]) -> f64,
    max_probes: usize,
) {
    if let Err(msg) = check_gradient(name, x, analytic, loss, max_probes) {
        panic!("{msg}");
    }
}

/// [`check_close`] against an f64 reference (narrowed to f32 first).
#[track_caller]
pub fn assert_close64(
    name: &str,
    gpu: &[f32],
    reference: &[f64],
    atol: f32,
    rtol: f32,
) -> Closeness {
    assert_close(name, gpu, &to_f32(reference), atol, rtol)
}

/// A GEMM operand `x`, logically (rows, cols), as it is stored: transposed to (cols, rows)
/// when `transposed` (the TRANS_A / TRANS_B forms), else as is.
pub fn stored(x: &[f32], rows: usize, cols: usize, transposed: bool) -> Vec<f32> {
    if transposed {
        crate::model::bert::params::transpose(x, rows, cols)
    } else {
        x.to_vec()
    }
}

/// Whether two runs gave the same bits.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// [`check_close`], panicking with its message on failure.
#[track_caller]
pub fn assert_close(name: &str, gpu: &[f32], reference: &[f32], atol: f32, rtol: f32) -> Closeness {
    match check_close(name, gpu, reference, atol, rtol) {
        Ok(c) => c,
        Err(msg) => panic!("{msg}"),
    }
}

/// The contexts GPU tests run on: the selected adapter, or every one found when
/// `WGFORMER_TEST_ADAPTERS=all`. Panics with install instructions when there is none.
#[cfg(not(target_arch = "wasm32"))]
pub fn test_contexts(needs: &Needs) -> Vec<GpuContext> {
    quiet_wayland();
    // `RUST_LOG=wgformer=debug cargo test -- --nocapture` shows each pipeline's compile time.
    let _ = env_logger::builder().is_test(true).try_init();
    let opts = GpuOptions::from_env().unwrap_or_else(|e| panic!("{e}"));
    let all = std::env::var("WGFORMER_TEST_ADAPTERS").is_ok_and(|v| v == "all");
    let adapters = pollster::block_on(list_adapters(&opts));
    assert!(
        !adapters.is_empty(),
        "GPU tests need an adapter and none was found.\n{NO_ADAPTER_HINT}"
    );
    let take = if all { adapters.len() } else { 1 };
    adapters
        .into_iter()
        .take(take)
        .map(|a| {
            let ctx = pollster::block_on(GpuContext::from_adapter(a, &opts, needs))
                .unwrap_or_else(|e| panic!("{e}"));
            eprintln!("[wgformer test] adapter: {}", ctx.adapter_name());
            ctx
        })
        .collect()
}

/// Run `f` on each test context (see [`test_contexts`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn on_each_adapter(f: impl Fn(&GpuContext)) {
    for ctx in test_contexts(&Needs::default()) {
        f(&ctx);
    }
}

/// libwayland prints an error for every Vulkan instance when `XDG_RUNTIME_DIR` is unset;
/// tests open no windows, so point it at the temp dir once, before any instance exists.
#[cfg(not(target_arch = "wasm32"))]
pub fn quiet_wayland() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
        }
    });
}

/// Print every line of a parity `report` (prefixed by `label`) and fail, listing the
/// lines that did not pass, unless all did.
pub fn assert_report(label: &str, report: &[crate::parity::Comparison]) {
    for c in report {
        eprintln!("  {label}: {c}");
    }
    let failed: Vec<String> = report
        .iter()
        .filter(|c| !c.pass)
        .map(|c| c.to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{label}: parity failed:\n{}",
        failed.join("\n")
    );
}

/// A second context on `ctx`'s device, to change what a test may change per context (its
/// binding limit, its matmul family or tile shape) without touching the first.
#[cfg(not(target_arch = "wasm32"))]
pub fn reopen(ctx: &GpuContext) -> GpuContext {
    pollster::block_on(GpuContext::from_adapter(
        ctx.adapter.clone(),
        &GpuOptions::default(),
        &Needs::default(),
    ))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Run `f` on a context of `ctx`'s device for each matmul kernel family (tiled, rows,
/// subgroup) the device can run; a family it lacks (subgroup without fixed-size
/// subgroups) is named on stderr and left out.
#[cfg(not(target_arch = "wasm32"))]
pub fn on_each_matmul_kernel(ctx: &GpuContext, f: impl Fn(&GpuContext)) {
    use crate::gpu::MatmulKernel;
    for kernel in [
        MatmulKernel::Tiled,
        MatmulKernel::Rows,
        MatmulKernel::Subgroup,
    ] {
        if !ctx.runs_matmul_family(kernel) {
            eprintln!(
                "[wgformer test] {}: {kernel:?} not available",
                ctx.adapter_name()
            );
            continue;
        }
        f(&reopen(ctx).with_matmul_kernel(kernel));
    }
}
