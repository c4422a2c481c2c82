//! `wgformer selfcheck`: run each kernel family once on the open adapter at small, awkward
//! sizes (B=2, T=7, C=48, NH=4 so HS=12, V=101) and compare it with its CPU reference.
//! It is the main job's proof that this adapter computes what the references compute;
//! the test suite goes much further (every size the issues name, finite differences,
//! determinism, binding chunks).

use crate::error::Result;
use crate::gpu::{DType, GpuContext, KernelTime, Profiler, Schedule, Tensor};
use crate::kernels as k;
use crate::reference as r;
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

struct Inputs<'a> {
    ctx: &'a GpuContext,
    rng: Rng,
}

impl Inputs<'_> {
    /// A random f32 tensor and its f64 copy.
    fn rand(&mut self, label: &str, shape: &[usize], scale: f32) -> Result<(Tensor, Vec<f64>)> {
        let n: usize = shape.iter().product();
        let v = self.rng.vec_uniform(n, -scale, scale);
        Ok((Tensor::from_f32(self.ctx, label, shape, &v)?, to_f64(&v)))
    }

    fn zeros(&self, label: &str, shape: &[usize]) -> Result<Tensor> {
        Tensor::zeros(self.ctx, label, shape, DType::F32)
    }
}

/// Run each kernel family once on `ctx` and compare it with the CPU reference.
pub async fn selfcheck(ctx: &GpuContext) -> Result<Vec<Check>> {
    Ok(selfcheck_profiled(ctx).await?.0)
}

/// [`selfcheck`], plus the GPU time of each launch when the device was opened with
/// timestamp queries (`--profile`); empty otherwise.
pub async fn selfcheck_profiled(ctx: &GpuContext) -> Result<(Vec<Check>, Vec<KernelTime>)> {
    let (b, t, c, nh, v) = (2usize, 7usize, 48usize, 4usize, 101usize);
    let bt = b * t;
    let size = format!("B={b} T={t} C={c} NH={nh} V={v}");
    let mut x = Inputs {
        ctx,
        rng: Rng::new(1234),
    };
    let mut s = Schedule::new("selfcheck");

    // Inputs.
    let toks: Vec<i32> = (0..bt).map(|i| ((i * 37 + 5) % v) as i32).collect();
    let tokens = Tensor::from_i32(ctx, "tokens", &[b, t], &toks)?;
    let (wte, wte64) = x.rand("wte", &[v, c], 1.0)?;
    let (wpe, wpe64) = x.rand("wpe", &[t, c], 1.0)?;
    let (lnw, lnw64) = x.rand("ln.weight", &[c], 1.0)?;
    let (lnb, lnb64) = x.rand("ln.bias", &[c], 1.0)?;
    let (w, w64) = x.rand("weight", &[c, 3 * c], 0.2)?;
    let (bias, bias64) = x.rand("bias", &[3 * c], 0.2)?;
    let (dout, dout64) = x.rand("dout", &[b, t, c], 1.0)?;

    // GPU: encoder → layernorm → matmul (qkv) → attention → gelu → residual → logits → loss.
    let enc = x.zeros("encoded", &[b, t, c])?;
    let ln = x.zeros("ln", &[b, t, c])?;
    let mean = x.zeros("mean", &[b, t])?;
    let rstd = x.zeros("rstd", &[b, t])?;
    let qkv = x.zeros("qkv", &[b, t, 3 * c])?;
    let att = x.zeros("att", &[b, t, c])?;
    let stats = x.zeros("att stats", &[b, nh, t])?;
    let gel = x.zeros("gelu", &[b, t, c])?;
    let res = x.zeros("residual", &[b, t, c])?;
    let logits = x.zeros("logits", &[b, t, v])?;
    let losses = x.zeros("losses", &[b, t])?;
    let dqkv = x.zeros("dqkv", &[b, t, 3 * c])?;
    let dln = x.zeros("dln", &[b, t, c])?;
    let dw = x.zeros("dweight", &[c, 3 * c])?;
    let db = x.zeros("dbias", &[3 * c])?;
    let best = Tensor::zeros(ctx, "argmax", &[bt], DType::U32)?;
    k::encoder::encoder_forward(&mut s, ctx, &enc, &tokens, &wte, &wpe, b, t, c, v)?;
    k::layernorm::layernorm_forward(
        &mut s, ctx, &ln, &mean, &rstd, &enc, &lnw, &lnb, b, t, c, 1e-5,
    )?;
    k::matmul::matmul_forward(&mut s, ctx, &qkv, &ln, &w, Some(&bias), bt, c, 3 * c)?;
    k::attention::attention_forward(&mut s, ctx, &att, &stats, &qkv, b, t, c, nh)?;
    k::gelu::gelu_forward(&mut s, ctx, &gel, &att, bt * c)?;
    k::residual::residual_forward(&mut s, ctx, &res, &gel, &enc, bt * c)?;
    k::matmul::classifier_forward(&mut s, ctx, &logits, &res, &wte, bt, c, v)?;
    let targets = Tensor::from_i32(ctx, "targets", &[b, t], &toks)?;
    k::crossentropy::crossentropy_forward(&mut s, ctx, &losses, &logits, &targets, bt, v)?;
    k::sampling::argmax_forward(&mut s, ctx, &best, &logits, bt, v)?;
    k::attention::attention_backward(&mut s, ctx, &dqkv, &dout, &qkv, &att, &stats, b, t, c, nh)?;
    k::matmul::matmul_backward(
        &mut s,
        ctx,
        &dln,
        &dw,
        Some(&db),
        &dqkv,
        &ln,
        &w,
        bt,
        c,
        3 * c,
    )?;
    let mut times = Vec::new();
    match Profiler::new(ctx, &s) {
        Some(profiler) => {
            s.run_profiled(ctx, &profiler);
            times = profiler.read(ctx).await?;
        }
        None => {
            s.run(ctx);
        }
    }

    // CPU, the same chain in f64.
    let mut e = vec![0.0; bt * c];
    r::encoder::encoder_forward(&mut e, &toks, &wte64, &wpe64, b, t, c, v);
    let (mut l, mut m, mut rs) = (vec![0.0; bt * c], vec![0.0; bt], vec![0.0; bt]);
    r::layernorm::layernorm_forward(&mut l, &mut m, &mut rs, &e, &lnw64, &lnb64, b, t, c, 1e-5);
    let mut q = vec![0.0; bt * 3 * c];
    r::matmul::matmul_forward(&mut q, &l, &w64, Some(&bias64), bt, c, 3 * c);
    let (mut a, mut st) = (vec![0.0; bt * c], vec![0.0; b * nh * t]);
    r::attention::attention_forward(&mut a, &mut st, &q, b, t, c, nh);
    let mut g = vec![0.0; bt * c];
    r::gelu::gelu_forward(&mut g, &a, bt * c);
    let mut rsd = vec![0.0; bt * c];
    r::residual::residual_forward(&mut rsd, &g, &e, bt * c);
    let mut lg = vec![0.0; bt * v];
    let wte_t: Vec<f64> = (0..c * v).map(|i| wte64[(i % v) * c + i / v]).collect();
    r::matmul::matmul_forward(&mut lg, &rsd, &wte_t, None, bt, c, v);
    let mut ls = vec![0.0; bt];
    r::crossentropy::crossentropy_forward(&mut ls, &lg, &toks, bt, v);
    let mut am = vec![0u32; bt];
    r::sampling::argmax_forward(&mut am, &lg, bt, v);
    let mut dq = vec![0.0; bt * 3 * c];
    r::attention::attention_backward(&mut dq, &dout64, &q, &a, &st, b, t, c, nh);
    let (mut dl, mut dww, mut dbb) = (vec![0.0; bt * c], vec![0.0; c * 3 * c], vec![0.0; 3 * c]);
    r::matmul::matmul_backward(
        &mut dl,
        &mut dww,
        Some(&mut dbb),
        &dq,
        &l,
        &w64,
        bt,
        c,
        3 * c,
    );

    let mut checks = Vec::new();
    let elementwise = (1e-5, 1e-4);
    let reduction = (1e-4, 1e-3);
    for (name, gpu, cpu, (atol, rtol)) in [
        ("encoder_forward", &enc, e, elementwise),
        ("layernorm_forward", &ln, l, reduction),
        ("matmul_forward", &qkv, q, reduction),
        ("attention_forward", &att, a, reduction),
        ("gelu_forward", &gel, g, elementwise),
        ("residual_forward", &res, rsd, elementwise),
        ("classifier_forward", &logits, lg, reduction),
        ("crossentropy_forward", &losses, ls, reduction),
        ("attention_backward", &dqkv, dq, reduction),
        ("matmul_backward dinp", &dln, dl, reduction),
        ("matmul_backward dweight", &dw, dww, reduction),
        ("matmul_backward dbias", &db, dbb, reduction),
    ] {
        let got = gpu.read_f32(ctx).await?;
        let outcome = check_close(name, &got, &to_f32(&cpu), atol, rtol).map(|c| c.max_abs);
        checks.push(Check {
            kernel: name.into(),
            size: size.clone(),
            outcome,
        });
    }
    let got: Vec<u32> = best.read(ctx).await?;
    checks.push(Check {
        kernel: "argmax_forward".into(),
        size,
        outcome: if got == am {
            Ok(0.0)
        } else {
            Err(format!("argmax: gpu {got:?} vs reference {am:?}"))
        },
    });
    Ok((checks, times))
}
