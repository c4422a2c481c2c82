//! layernorm_forward and layernorm_backward against their CPU references at GPT-2's
//! awkward sizes (T = 1; C = 48, 80, 768), including a constant row (variance 0, so
//! rstd = 1/√eps); the backward reference checked by finite differences; both kernels
//! checked to give the same bits on a second run.

use wgformer::gpu::{DType, GpuContext, Schedule, Tensor};
use wgformer::kernels::layernorm::{layernorm_backward, layernorm_forward};
use wgformer::reference::layernorm as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, assert_gradient, on_each_adapter, same_bits, to_f64};

const EPS: f32 = 1e-5;

/// (B, T, C)
const SIZES: [(usize, usize, usize); 6] = [
    (1, 1, 48),
    (2, 7, 80),
    (3, 1, 768),
    (2, 64, 48),
    (3, 7, 768),
    (2, 64, 768),
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
        let k = Case::new(&mut rng, (3, 64, 768));
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
    // 65,537 rows need more than 65,535 workgroups: the launch is folded into 2-D.
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
