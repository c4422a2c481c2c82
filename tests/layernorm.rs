//! layernorm_forward and layernorm_backward against their CPU references at GPT-2's
//! awkward sizes (T = 1; C = 48, 80, 768), including a constant row (variance 0, so
//! rstd = 1/√eps); the backward reference checked by finite differences; both kernels
//! checked to give the same bits on a second run. The fused residual_layernorm_forward
//! and residual_layernorm_backward likewise against their references (also at odd C and
//! C > 1024), and checked to give the same bits as residual_forward + layernorm_forward
//! and layernorm_backward + residual_backward, which they replace in the models.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::layernorm::{
    layernorm_backward, layernorm_forward, residual_layernorm_backward, residual_layernorm_forward,
};
use wgformer::kernels::matmul::BIAS_ONE_SLAB_ROWS;
use wgformer::kernels::residual::{residual_backward, residual_forward};
use wgformer::reference::layernorm as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

const EPS: f32 = 1e-5;

/// (B, T, C). The last has 1200 rows: dweight and dbias are summed in five slabs of
/// 256 rows (the last one short) and the slabs' partial sums then added.
const SIZES: [(usize, usize, usize); 7] = [
    (1, 1, 48),
    (2, 7, 80),
    (3, 1, 768),
    (2, 64, 48),
    (3, 7, 768),
    (2, 64, 768),
    (4, 300, 80),
];

/// Inputs of one test case, in f32 as uploaded.
struct Case {
    b: usize,
    t: usize,
    c: usize,
    inp: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    dout: Vec<f32>,
    /// Starting values of dinp, dweight, dbias: the backward adds into them.
    prior: [Vec<f32>; 3],
}

impl Case {
    fn new(rng: &mut Rng, (b, t, c): (usize, usize, usize)) -> Self {
        // Rows off-centre and of varied spread, as a residual stream's are.
        let mut inp = Vec::with_capacity(b * t * c);
        for _ in 0..b * t {
            let (shift, scale) = (rng.vec_uniform(1, -3.0, 3.0)[0], 0.2 + 3.0 * rng.uniform());
            inp.extend(rng.vec_normal(c, scale).iter().map(|x| x + shift));
        }
        // With more than one row, the last is constant: variance 0, rstd = 1/√eps.
        if b * t > 1 {
            inp[(b * t - 1) * c..].fill(0.7);
        }
        Case {
            b,
            t,
            c,
            inp,
            weight: rng.vec_normal(c, 0.2).iter().map(|w| w + 1.0).collect(),
            bias: rng.vec_normal(c, 0.2),
            dout: rng.vec_normal(b * t * c, 1.0),
            prior: [
                rng.vec_normal(b * t * c, 1.0),
                rng.vec_normal(c, 1.0),
                rng.vec_normal(c, 1.0),
            ],
        }
    }
}

/// GPU results: [out, mean, rstd, dinp, dweight, dbias].
fn run(ctx: &GpuContext, k: &Case) -> [Vec<f32>; 6] {
    let (b, t, c) = (k.b, k.t, k.c);
    let f = |name: &str, shape: &[usize], data: &[f32]| {
        Tensor::from_f32(ctx, name, shape, data).unwrap()
    };
    let z = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape, DType::F32).unwrap();
    let inp = f("inp", &[b, t, c], &k.inp);
    let weight = f("weight", &[c], &k.weight);
    let bias = f("bias", &[c], &k.bias);
    let dout = f("dout", &[b, t, c], &k.dout);
    let out = z("out", &[b, t, c]);
    let mean = z("mean", &[b, t]);
    let rstd = z("rstd", &[b, t]);
    let dinp = f("dinp", &[b, t, c], &k.prior[0]);
    let dweight = f("dweight", &[c], &k.prior[1]);
    let dbias = f("dbias", &[c], &k.prior[2]);
    let mut s = Schedule::new("layernorm");
    layernorm_forward(
        &mut s, ctx, &out, &mean, &rstd, &inp, &weight, &bias, b, t, c, EPS,
    )
    .unwrap();
    layernorm_backward(
        &mut s, ctx, &dinp, &dweight, &dbias, &dout, &inp, &weight, &mean, &rstd, b, t, c,
    )
    .unwrap();
    // forward, dinp, dweight + dbias; past one slab's rows, the two sums of the slabs.
    let slabs = b * t > BIAS_ONE_SLAB_ROWS;
    assert_eq!(
        s.launch_labels().len(),
        if slabs { 5 } else { 3 },
        "B·T = {}",
        b * t
    );
    s.run(ctx);
    [out, mean, rstd, dinp, dweight, dbias].map(|x| ctx.block_on(x.read_f32(ctx)).unwrap())
}

/// Reference results, in the order of [`run`].
fn reference(k: &Case) -> [Vec<f64>; 6] {
    let (b, t, c) = (k.b, k.t, k.c);
    let (inp, weight) = (to_f64(&k.inp), to_f64(&k.weight));
    let mut out = vec![0f64; b * t * c];
    let mut mean = vec![0f64; b * t];
    let mut rstd = vec![0f64; b * t];
    cpu::layernorm_forward(
        &mut out,
        &mut mean,
        &mut rstd,
        &inp,
        &weight,
        &to_f64(&k.bias),
        b,
        t,
        c,
        EPS as f64,
    );
    let [mut dinp, mut dweight, mut dbias] = k.prior.clone().map(|p| to_f64(&p));
    cpu::layernorm_backward(
        &mut dinp,
        &mut dweight,
        &mut dbias,
        &to_f64(&k.dout),
        &inp,
        &weight,
        &mean,
        &rstd,
        b,
        t,
        c,
    );
    [out, mean, rstd, dinp, dweight, dbias]
}

#[test]
fn layernorm_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(21);
        for size in SIZES {
            let k = Case::new(&mut rng, size);
            let got = run(ctx, &k);
            let want = reference(&k);
            let names = ["out", "mean", "rstd", "dinp", "dweight", "dbias"];
            let mut report = Vec::new();
            for ((name, g), w) in names.iter().zip(&got).zip(&want) {
                let what = format!("layernorm {name} B={} T={} C={}", k.b, k.t, k.c);
                let cl = assert_close64(&what, g, w, 1e-4, 1e-3);
                report.push(format!("{name} {:.1e}", cl.max_abs));
            }
            eprintln!("layernorm {size:?}: max |Δ| {}", report.join(", "));
        }
    });
}

#[test]
fn layernorm_backward_reference_is_the_gradient() {
    let (b, t, c) = (2, 3, 5);
    let mut rng = Rng::new(22);
    let k = Case::new(&mut rng, (b, t, 5));
    // No constant row here: at variance 0 the finite differences are dominated by eps.
    let inp = to_f64(&rng.vec_normal(b * t * c, 1.5));
    let weight = to_f64(&k.weight);
    let bias = to_f64(&k.bias);
    let dout = to_f64(&k.dout);
    let eps = EPS as f64;
    let loss = |inp: &[f64], weight: &[f64], bias: &[f64]| {
        let mut out = vec![0f64; b * t * c];
        let (mut mean, mut rstd) = (vec![0f64; b * t], vec![0f64; b * t]);
        cpu::layernorm_forward(
            &mut out, &mut mean, &mut rstd, inp, weight, bias, b, t, c, eps,
        );
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let mut out = vec![0f64; b * t * c];
    let (mut mean, mut rstd) = (vec![0f64; b * t], vec![0f64; b * t]);
    cpu::layernorm_forward(
        &mut out, &mut mean, &mut rstd, &inp, &weight, &bias, b, t, c, eps,
    );
    let (mut dinp, mut dweight, mut dbias) = (vec![0f64; b * t * c], vec![0f64; c], vec![0f64; c]);
    cpu::layernorm_backward(
        &mut dinp,
        &mut dweight,
        &mut dbias,
        &dout,
        &inp,
        &weight,
        &mean,
        &rstd,
        b,
        t,
        c,
    );
    assert_gradient(
        "layernorm dinp",
        &inp,
        &dinp,
        |x| loss(x, &weight, &bias),
        100,
    );
    assert_gradient(
        "layernorm dweight",
        &weight,
        &dweight,
        |x| loss(&inp, x, &bias),
        100,
    );
    assert_gradient(
        "layernorm dbias",
        &bias,
        &dbias,
        |x| loss(&inp, &weight, x),
        100,
    );
}

#[test]
fn layernorm_is_deterministic() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(23);
        // 1200 rows: five slabs and their partial sums.
        let k = Case::new(&mut rng, (3, 400, 768));
        let first = run(ctx, &k);
        let again = run(ctx, &k);
        let names = ["out", "mean", "rstd", "dinp", "dweight", "dbias"];
        for ((name, a), b) in names.iter().zip(&first).zip(&again) {
            assert!(same_bits(a, b), "layernorm {name} gave different bits");
        }
    });
}

#[test]
fn layernorm_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let (b, t, c) = (2, 3, 48);
        let z = |name: &str, n: usize| Tensor::zeros(ctx, name, &[n], DType::F32).unwrap();
        let x = z("x", b * t * c);
        let row = z("row", b * t);
        let ch = z("ch", c);
        let bad = z("bad_weight", c + 1);
        let mut s = Schedule::new("layernorm");
        let e = layernorm_forward(&mut s, ctx, &x, &row, &row, &x, &bad, &ch, b, t, c, EPS)
            .unwrap_err();
        assert!(e.to_string().contains("bad_weight"), "{e}");
        let e = layernorm_backward(&mut s, ctx, &x, &ch, &ch, &x, &x, &ch, &bad, &row, b, t, c)
            .unwrap_err();
        assert!(e.to_string().contains("bad_weight"), "{e}");
    });
}

#[test]
fn layernorm_rows_past_the_workgroup_limit() {
    // 65,537 rows need more than 65,535 workgroups: the launch is folded into 2-D. For
    // dweight and dbias they make 253 slabs of 260 rows (slabs grow past 256 rows when
    // there would be more than 256 of them).
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(24);
        let k = Case::new(&mut rng, (1, 65_537, 48));
        let got = run(ctx, &k);
        let want = reference(&k);
        let names = ["out", "mean", "rstd", "dinp", "dweight", "dbias"];
        for ((name, g), w) in names.iter().zip(&got).zip(&want) {
            let cl = assert_close64(&format!("layernorm {name} T=65537"), g, w, 1e-4, 1e-3);
            eprintln!("layernorm T=65537 {name}: max |Δ| {:.1e}", cl.max_abs);
        }
    });
}

/// (B, T, C) of the fused kernels: odd C, C under and over one workgroup's 256 lanes.
/// The last: 1200 rows, dweight and dbias in slabs.
const FUSED_SIZES: [(usize, usize, usize); 8] = [
    (1, 1, 48),
    (2, 7, 81),
    (3, 1, 768),
    (2, 64, 33),
    (3, 7, 768),
    (2, 5, 1025),
    (2, 64, 768),
    (4, 300, 81),
];

/// Inputs of one fused test case: [`Case`]'s rows split as x + sub.
struct FusedCase {
    b: usize,
    t: usize,
    c: usize,
    x: Vec<f32>,
    sub: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
    dout: Vec<f32>,
    /// Starting values of dx, dsub, dres, dweight, dbias: the backward adds into them
    /// (dres: the gradient res already has from the rest of the graph).
    prior: [Vec<f32>; 5],
}

impl FusedCase {
    fn new(rng: &mut Rng, size: (usize, usize, usize)) -> Self {
        let k = Case::new(rng, size);
        let (b, t, c) = size;
        let mut x = k.inp;
        let mut sub = rng.vec_normal(b * t * c, 0.5);
        // With more than one row, the last sums to a constant (exactly: 0.5 + 0.25).
        if b * t > 1 {
            x[(b * t - 1) * c..].fill(0.5);
            sub[(b * t - 1) * c..].fill(0.25);
        }
        let [_, dweight, dbias] = k.prior;
        FusedCase {
            b,
            t,
            c,
            x,
            sub,
            weight: k.weight,
            bias: k.bias,
            dout: k.dout,
            prior: [
                rng.vec_normal(b * t * c, 1.0),
                rng.vec_normal(b * t * c, 1.0),
                rng.vec_normal(b * t * c, 1.0),
                dweight,
                dbias,
            ],
        }
    }
}

const FUSED_NAMES: [&str; 9] = [
    "res", "out", "mean", "rstd", "dx", "dsub", "dres", "dweight", "dbias",
];

/// GPU results in the order of [`FUSED_NAMES`], by the fused kernels or, with `fused`
/// false, by the unfused pairs they replace.
fn run_fused(ctx: &GpuContext, k: &FusedCase, fused: bool) -> [Vec<f32>; 9] {
    let (b, t, c) = (k.b, k.t, k.c);
    let f = |name: &str, shape: &[usize], data: &[f32]| {
        Tensor::from_f32(ctx, name, shape, data).unwrap()
    };
    let z = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape, DType::F32).unwrap();
    let x = f("x", &[b, t, c], &k.x);
    let sub = f("sub", &[b, t, c], &k.sub);
    let weight = f("weight", &[c], &k.weight);
    let bias = f("bias", &[c], &k.bias);
    let dout = f("dout", &[b, t, c], &k.dout);
    let res = z("res", &[b, t, c]);
    let out = z("out", &[b, t, c]);
    let mean = z("mean", &[b, t]);
    let rstd = z("rstd", &[b, t]);
    let dx = f("dx", &[b, t, c], &k.prior[0]);
    let dsub = f("dsub", &[b, t, c], &k.prior[1]);
    let dres = f("dres", &[b, t, c], &k.prior[2]);
    let dweight = f("dweight", &[c], &k.prior[3]);
    let dbias = f("dbias", &[c], &k.prior[4]);
    let mut s = Schedule::new("residual_layernorm");
    if fused {
        residual_layernorm_forward(
            &mut s, ctx, &res, &out, &mean, &rstd, &x, &sub, &weight, &bias, b, t, c, EPS,
        )
        .unwrap();
        residual_layernorm_backward(
            &mut s, ctx, &dx, &dsub, &dres, &dweight, &dbias, &dout, &res, &weight, &mean, &rstd,
            b, t, c,
        )
        .unwrap();
    } else {
        residual_forward(&mut s, ctx, &res, &x, &sub, b * t * c).unwrap();
        layernorm_forward(
            &mut s, ctx, &out, &mean, &rstd, &res, &weight, &bias, b, t, c, EPS,
        )
        .unwrap();
        layernorm_backward(
            &mut s, ctx, &dres, &dweight, &dbias, &dout, &res, &weight, &mean, &rstd, b, t, c,
        )
        .unwrap();
        residual_backward(&mut s, ctx, &dx, &dsub, &dres, b * t * c).unwrap();
    }
    s.run(ctx);
    [res, out, mean, rstd, dx, dsub, dres, dweight, dbias]
        .map(|x| ctx.block_on(x.read_f32(ctx)).unwrap())
}

/// Reference results, in the order of [`FUSED_NAMES`].
fn reference_fused(k: &FusedCase) -> [Vec<f64>; 9] {
    let (b, t, c) = (k.b, k.t, k.c);
    let weight = to_f64(&k.weight);
    let mut res = vec![0f64; b * t * c];
    let mut out = vec![0f64; b * t * c];
    let mut mean = vec![0f64; b * t];
    let mut rstd = vec![0f64; b * t];
    cpu::residual_layernorm_forward(
        &mut res,
        &mut out,
        &mut mean,
        &mut rstd,
        &to_f64(&k.x),
        &to_f64(&k.sub),
        &weight,
        &to_f64(&k.bias),
        b,
        t,
        c,
        EPS as f64,
    );
    let [mut dx, mut dsub, mut dres, mut dweight, mut dbias] = k.prior.clone().map(|p| to_f64(&p));
    cpu::residual_layernorm_backward(
        &mut dx,
        &mut dsub,
        &mut dres,
        &mut dweight,
        &mut dbias,
        &to_f64(&k.dout),
        &res,
        &weight,
        &mean,
        &rstd,
        b,
        t,
        c,
    );
    [res, out, mean, rstd, dx, dsub, dres, dweight, dbias]
}

#[test]
fn residual_layernorm_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(25);
        for size in FUSED_SIZES {
            let k = FusedCase::new(&mut rng, size);
            let got = run_fused(ctx, &k, true);
            let want = reference_fused(&k);
            let mut report = Vec::new();
            for ((name, g), w) in FUSED_NAMES.iter().zip(&got).zip(&want) {
                let what = format!("residual_layernorm {name} B={} T={} C={}", k.b, k.t, k.c);
                let cl = assert_close64(&what, g, w, 1e-4, 1e-3);
                report.push(format!("{name} {:.1e}", cl.max_abs));
            }
            eprintln!("residual_layernorm {size:?}: max |Δ| {}", report.join(", "));
        }
    });
}

#[test]
fn residual_layernorm_gives_the_unfused_bits() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(26);
        for size in FUSED_SIZES {
            let k = FusedCase::new(&mut rng, size);
            let fused = run_fused(ctx, &k, true);
            let unfused = run_fused(ctx, &k, false);
            for ((name, a), b) in FUSED_NAMES.iter().zip(&fused).zip(&unfused) {
                if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
                    let max = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    panic!(
                        "residual_layernorm {name} {size:?}: fused and unfused differ, first at \
                         index {i}: {} vs {}; max |Δ| = {max:e}",
                        a[i], b[i]
                    );
                }
            }
            // And the same bits on a second run.
            let again = run_fused(ctx, &k, true);
            for ((name, a), b) in FUSED_NAMES.iter().zip(&fused).zip(&again) {
                assert!(
                    same_bits(a, b),
                    "residual_layernorm {name} gave different bits"
                );
            }
        }
    });
}

#[test]
fn residual_layernorm_backward_reference_is_the_gradient() {
    // loss = Σ out·dout + Σ res·dres0, with res = x + sub, out = norm(res): dres0 is the
    // gradient res gets from elsewhere (the next residual add), which the backward
    // finds in dres and hands on to x and sub with norm's.
    let (b, t, c) = (2, 3, 5);
    let mut rng = Rng::new(27);
    let k = FusedCase::new(&mut rng, (b, t, c));
    // No constant row here: at variance 0 the finite differences are dominated by eps.
    let x = to_f64(&rng.vec_normal(b * t * c, 1.5));
    let sub = to_f64(&rng.vec_normal(b * t * c, 0.5));
    let weight = to_f64(&k.weight);
    let bias = to_f64(&k.bias);
    let dout = to_f64(&k.dout);
    let dres0 = to_f64(&k.prior[2]);
    let eps = EPS as f64;
    let forward = |x: &[f64], sub: &[f64], weight: &[f64], bias: &[f64]| {
        let (mut res, mut out) = (vec![0f64; b * t * c], vec![0f64; b * t * c]);
        let (mut mean, mut rstd) = (vec![0f64; b * t], vec![0f64; b * t]);
        cpu::residual_layernorm_forward(
            &mut res, &mut out, &mut mean, &mut rstd, x, sub, weight, bias, b, t, c, eps,
        );
        (res, out, mean, rstd)
    };
    let loss = |x: &[f64], sub: &[f64], weight: &[f64], bias: &[f64]| {
        let (res, out, _, _) = forward(x, sub, weight, bias);
        let o = out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>();
        o + res.iter().zip(&dres0).map(|(r, d)| r * d).sum::<f64>()
    };
    let (res, _, mean, rstd) = forward(&x, &sub, &weight, &bias);
    let n = b * t * c;
    let (mut dx, mut dsub, mut dres) = (vec![0f64; n], vec![0f64; n], dres0.clone());
    let (mut dweight, mut dbias) = (vec![0f64; c], vec![0f64; c]);
    cpu::residual_layernorm_backward(
        &mut dx,
        &mut dsub,
        &mut dres,
        &mut dweight,
        &mut dbias,
        &dout,
        &res,
        &weight,
        &mean,
        &rstd,
        b,
        t,
        c,
    );
    assert_gradient(
        "residual_layernorm dx",
        &x,
        &dx,
        |v| loss(v, &sub, &weight, &bias),
        100,
    );
    assert_gradient(
        "residual_layernorm dsub",
        &sub,
        &dsub,
        |v| loss(&x, v, &weight, &bias),
        100,
    );
    assert_gradient(
        "residual_layernorm dweight",
        &weight,
        &dweight,
        |v| loss(&x, &sub, v, &bias),
        100,
    );
    assert_gradient(
        "residual_layernorm dbias",
        &bias,
        &dbias,
        |v| loss(&x, &sub, &weight, v),
        100,
    );
}

#[test]
fn residual_layernorm_rejects_wrong_sizes() {
    on_each_adapter(|ctx| {
        let (b, t, c) = (2, 3, 48);
        let z = |name: &str, n: usize| Tensor::zeros(ctx, name, &[n], DType::F32).unwrap();
        let x = z("x", b * t * c);
        let (y, w) = (z("y", b * t * c), z("w", b * t * c));
        let row = z("row", b * t);
        let ch = z("ch", c);
        let bad = z("bad_sub", b * t * c - 1);
        let mut s = Schedule::new("residual_layernorm");
        let e = residual_layernorm_forward(
            &mut s, ctx, &y, &w, &row, &row, &x, &bad, &ch, &ch, b, t, c, EPS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad_sub"), "{e}");
        let e = residual_layernorm_backward(
            &mut s, ctx, &y, &bad, &w, &ch, &ch, &x, &x, &ch, &row, &row, b, t, c,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad_sub"), "{e}");
    });
}
