//! `wgformer selfcheck`: run every kernel once on the open adapter at small awkward
//! sizes and compare it with its CPU reference. It is the main job's proof that the
//! adapter computes what the references compute; the test suite goes much further.

use crate::error::Result;
use crate::gpu::{GpuContext, Schedule, Tensor};
use crate::kernels;
use crate::reference;
use crate::rng::Rng;
use crate::testing::{check_close, to_f32, to_f64};

/// One comparison of a kernel against its reference.
#[derive(Clone, Debug)]
pub struct Check {
    pub kernel: String,
    pub size: String,
    /// `Ok(max |Δ|)` or the failure message.
    pub outcome: std::result::Result<f32, String>,
}

/// Run each kernel once on `ctx` and compare it with the CPU reference.
pub async fn selfcheck(ctx: &GpuContext) -> Result<Vec<Check>> {
    let mut rng = Rng::new(1234);
    let mut checks = Vec::new();

    let n = 1000;
    let a = rng.vec_uniform(n, -1.0, 1.0);
    let b = rng.vec_uniform(n, -1.0, 1.0);
    let ta = Tensor::from_f32(ctx, "a", &[n], &a)?;
    let tb = Tensor::from_f32(ctx, "b", &[n], &b)?;
    let filled = Tensor::zeros(ctx, "filled", &[n], crate::gpu::DType::F32)?;
    let copied = Tensor::zeros(ctx, "copied", &[n], crate::gpu::DType::F32)?;
    let sum = Tensor::zeros(ctx, "sum", &[n], crate::gpu::DType::F32)?;
    let (m, k, oc) = (37, 80, 101);
    let inp = rng.vec_uniform(m * k, -1.0, 1.0);
    let w = rng.vec_uniform(k * oc, -1.0, 1.0);
    let bias = rng.vec_uniform(oc, -1.0, 1.0);
    let t_inp = Tensor::from_f32(ctx, "inp", &[m, k], &inp)?;
    let t_w = Tensor::from_f32(ctx, "weight", &[k, oc], &w)?;
    let t_b = Tensor::from_f32(ctx, "bias", &[oc], &bias)?;
    let t_out = Tensor::zeros(ctx, "out", &[m, oc], crate::gpu::DType::F32)?;

    let mut s = Schedule::new("selfcheck");
    kernels::elementwise::fill(&mut s, ctx, &filled, 0.5)?;
    kernels::elementwise::copy(&mut s, ctx, &copied, &ta)?;
    kernels::elementwise::add(&mut s, ctx, &sum, &ta, &tb)?;
    kernels::matmul::matmul_forward(&mut s, ctx, &t_out, &t_inp, &t_w, Some(&t_b), m, k, oc)?;
    s.run(ctx);

    let mut push = |kernel: &str, size: String, gpu: Vec<f32>, cpu: Vec<f64>, atol, rtol| {
        let outcome = check_close(kernel, &gpu, &to_f32(&cpu), atol, rtol).map(|c| c.max_abs);
        checks.push(Check {
            kernel: kernel.to_string(),
            size,
            outcome,
        });
    };
    let (a, b, inp, w, bias) = (
        to_f64(&a),
        to_f64(&b),
        to_f64(&inp),
        to_f64(&w),
        to_f64(&bias),
    );
    let mut cpu = vec![0f64; n];
    reference::elementwise::fill(&mut cpu, 0.5);
    push(
        "fill",
        format!("n={n}"),
        filled.read_f32(ctx).await?,
        cpu.clone(),
        0.0,
        0.0,
    );
    reference::elementwise::copy(&mut cpu, &a);
    push(
        "copy",
        format!("n={n}"),
        copied.read_f32(ctx).await?,
        cpu.clone(),
        0.0,
        0.0,
    );
    reference::elementwise::add(&mut cpu, &a, &b);
    push(
        "add",
        format!("n={n}"),
        sum.read_f32(ctx).await?,
        cpu,
        1e-6,
        1e-6,
    );
    let mut cpu = vec![0f64; m * oc];
    reference::matmul::matmul_forward(&mut cpu, &inp, &w, Some(&bias), m, k, oc);
    push(
        "matmul_forward",
        format!("M={m} K={k} N={oc}"),
        t_out.read_f32(ctx).await?,
        cpu,
        1e-4,
        1e-3,
    );
    Ok(checks)
}
