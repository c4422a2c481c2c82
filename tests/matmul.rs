//! The matmul family against its CPU reference: the tiled forward in every form, the
//! gemv path for M ≤ GEMV_MAX_M rows, the layer's backward (dinp, dweight, dbias), and
//! the tied classifier with operands split into row chunks, both at small vocabularies
//! under a lowered binding limit and at GPT-2's real one. Backward references are
//! checked by finite differences; every entry point by a determinism run. The A_GELU
//! forms (GELU applied to a as it is loaded) in every kernel family against the
//! reference and, bit for bit, against gelu_forward followed by the plain form.

use wgformer::gpu::{DType, GpuContext, MatmulKernel, Needs, Schedule, Tensor};
use wgformer::kernels::gelu::gelu_forward;
use wgformer::kernels::matmul::{
    classifier_backward, classifier_forward, matmul_backward, matmul_backward_bias,
    matmul_backward_gelu_in, matmul_batched, matmul_forward, matmul_forward_gelu_in,
    matmul_forward_gemv, Gemm, Strided, TileConfig, BIAS_ONE_SLAB_ROWS, BIAS_SLAB,
};
use wgformer::reference::gelu as cpu_gelu;
use wgformer::reference::matmul as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_gradient, on_each_adapter, on_each_matmul_kernel, reopen, same_bits,
    stored, test_contexts, to_f64,
};

/// (M, K, N): rows, reduction, columns. The last is a GPT-2 124M MLP at T = 256.
const SIZES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (7, 13, 5),
    (127, 129, 65),
    (64, 64, 64),
    (256, 768, 3072),
];

fn upload(ctx: &GpuContext, label: &str, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(ctx, label, shape, data).unwrap()
}

fn read(ctx: &GpuContext, t: &Tensor) -> Vec<f32> {
    ctx.block_on(t.read_f32(ctx)).unwrap()
}

/// `prior + delta`, elementwise: what an accumulating kernel should leave.
fn plus(prior: &[f32], delta: &[f64]) -> Vec<f64> {
    prior
        .iter()
        .zip(delta)
        .map(|(&p, d)| p as f64 + d)
        .collect()
}

fn run_forward(
    ctx: &GpuContext,
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    (m, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let ti = Tensor::from_f32(ctx, "inp", &[m, k], inp).unwrap();
    let tw = Tensor::from_f32(ctx, "weight", &[k, n], w).unwrap();
    let tb = bias.map(|b| Tensor::from_f32(ctx, "bias", &[n], b).unwrap());
    let to = Tensor::zeros(ctx, "out", &[m, n], DType::F32).unwrap();
    let mut s = Schedule::new("matmul");
    matmul_forward(&mut s, ctx, &to, &ti, &tw, tb.as_ref(), m, k, n).unwrap();
    s.run(ctx);
    ctx.block_on(to.read_f32(ctx)).unwrap()
}

#[test]
fn matmul_forward_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(42);
        for (m, k, n) in SIZES {
            let inp = rng.vec_uniform(m * k, -1.0, 1.0);
            let w = rng.vec_normal(k * n, 0.1);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            for with_bias in [true, false] {
                let b = with_bias.then_some(bias.as_slice());
                let got = run_forward(ctx, &inp, &w, b, (m, k, n));
                let mut want = vec![0f64; m * n];
                let b64 = b.map(to_f64);
                cpu::matmul_forward(
                    &mut want,
                    &to_f64(&inp),
                    &to_f64(&w),
                    b64.as_deref(),
                    m,
                    k,
                    n,
                );
                let name = format!("matmul_forward {m}x{k}x{n} bias={with_bias}");
                assert_close64(&name, &got, &want, 1e-4, 1e-3);
            }
        }
    });
}

#[test]
fn matmul_is_deterministic() {
    on_each_adapter(|ctx| {
        let (m, k, n) = (127, 129, 65);
        let mut rng = Rng::new(3);
        let inp = rng.vec_uniform(m * k, -1.0, 1.0);
        let w = rng.vec_uniform(k * n, -1.0, 1.0);
        let first = run_forward(ctx, &inp, &w, None, (m, k, n));
        for _ in 0..3 {
            let again = run_forward(ctx, &inp, &w, None, (m, k, n));
            assert!(
                same_bits(&first, &again),
                "matmul gave different bits on a second run"
            );
        }
    });
}

/// Every (trans_a, trans_b, accumulate) form at (M, K, N), against the plain product.
fn check_gemm_forms(ctx: &GpuContext, rng: &mut Rng, (m, k, n): (usize, usize, usize)) {
    let a = rng.vec_uniform(m * k, -1.0, 1.0); // (M, K)
    let w = rng.vec_uniform(k * n, -1.0, 1.0); // (K, N)
    let prior = rng.vec_uniform(m * n, -1.0, 1.0);
    let mut plain = vec![0f64; m * n];
    cpu::matmul_forward(&mut plain, &to_f64(&a), &to_f64(&w), None, m, k, n);
    for (trans_a, trans_b, accumulate) in [
        (false, true, false),
        (true, false, false),
        (true, false, true),
        (false, true, true),
        (true, true, true),
    ] {
        let a_stored = stored(&a, m, k, trans_a);
        let w_stored = stored(&w, k, n, trans_b);
        let ta = upload(ctx, "a", &[a.len()], &a_stored);
        let tw = upload(ctx, "w", &[w.len()], &w_stored);
        let to = upload(ctx, "out", &[m, n], &prior);
        let gemm = Gemm {
            trans_a,
            trans_b,
            accumulate,
            a_gelu: false,
        };
        let mut s = Schedule::new("gemm");
        gemm.record(&mut s, ctx, &to, &ta, &tw, None, m, k, n)
            .unwrap();
        s.run(ctx);
        let got = read(ctx, &to);
        let want = if accumulate {
            plus(&prior, &plain)
        } else {
            plain.clone()
        };
        assert_close64(&format!("{gemm:?} {m}x{k}x{n}"), &got, &want, 1e-4, 1e-3);
    }
}

#[test]
fn gemm_transposed_and_accumulating_forms_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(11);
        // The first two are tiled, the last three take the gemv path (M ≤ 4).
        for size in [
            (7, 13, 5),
            (65, 130, 67),
            (1, 13, 5),
            (2, 130, 67),
            (3, 768, 80),
        ] {
            check_gemm_forms(ctx, &mut rng, size);
        }
    });
}

#[test]
fn matmul_forward_gemv_matches_reference() {
    // Both M ≤ 4 kernels on every adapter: the tiled family's `matmul_forward_gemv` and
    // the CPU families' `matmul_forward_gemv_cols`, whose vec4 entry takes N = 3072 (on a
    // CPU adapter; GPUs run the split-K gemv for every family).
    for (ctx, kernel) in test_contexts(&Needs::default())
        .iter()
        .flat_map(|c| [MatmulKernel::Tiled, MatmulKernel::Rows].map(|k| (ctx_with(c, k), k)))
    {
        let ctx = &ctx;
        if ctx.matmul_kernel() != kernel {
            eprintln!(
                "[wgformer test] {}: no {kernel:?} family",
                ctx.adapter_name()
            );
            continue;
        }
        eprintln!("gemv with the {kernel:?} family on {}", ctx.adapter_name());
        let mut rng = Rng::new(5);
        let mut kernels = std::collections::BTreeSet::new();
        for (k, n) in [(768, 3072), (13, 5), (40, 130)] {
            let w = rng.vec_normal(k * n, 0.1);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            for m in 1..=4 {
                let inp = rng.vec_uniform(m * k, -1.0, 1.0);
                for with_bias in [true, false] {
                    let ti = upload(ctx, "inp", &[m, k], &inp);
                    let tw = upload(ctx, "weight", &[k, n], &w);
                    let tb = with_bias.then(|| upload(ctx, "bias", &[n], &bias));
                    let to = Tensor::zeros(ctx, "out", &[m, n], DType::F32).unwrap();
                    let mut s = Schedule::new("gemv");
                    matmul_forward_gemv(&mut s, ctx, &to, &ti, &tw, tb.as_ref(), m, k, n).unwrap();
                    s.run(ctx);
                    kernels.extend(kernel_names(&s.launch_labels()));
                    let got = read(ctx, &to);
                    let b64 = with_bias.then(|| to_f64(&bias));
                    let mut want = vec![0f64; m * n];
                    cpu::matmul_forward_gemv(
                        &mut want,
                        &to_f64(&inp),
                        &to_f64(&w),
                        b64.as_deref(),
                        m,
                        k,
                        n,
                    );
                    let name =
                        format!("matmul_forward_gemv {kernel:?} {m}x{k}x{n} bias={with_bias}");
                    assert_close64(&name, &got, &want, 1e-4, 1e-3);
                }
            }
        }
        let expected: &[&str] = if ctx.is_cpu() && kernel == MatmulKernel::Rows {
            &["matmul_forward_gemv_cols", "matmul_forward_gemv_cols_vec4"]
        } else {
            &["matmul_forward_gemv"]
        };
        let what = format!("{} with the {kernel:?} family", ctx.adapter_name());
        assert_ran(&what, &kernels, expected);
    }
}

#[test]
fn matmul_backward_reference_matches_finite_differences() {
    let (m, k, n) = (3, 5, 4);
    let mut rng = Rng::new(21);
    let inp = to_f64(&rng.vec_uniform(m * k, -1.0, 1.0));
    let w = to_f64(&rng.vec_uniform(k * n, -1.0, 1.0));
    let b = to_f64(&rng.vec_uniform(n, -1.0, 1.0));
    let dout = to_f64(&rng.vec_uniform(m * n, -1.0, 1.0));
    let loss = |inp: &[f64], w: &[f64], b: &[f64]| {
        let mut out = vec![0f64; m * n];
        cpu::matmul_forward(&mut out, inp, w, Some(b), m, k, n);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let (mut dinp, mut dw, mut db) = (vec![0f64; m * k], vec![0f64; k * n], vec![0f64; n]);
    cpu::matmul_backward(&mut dinp, &mut dw, Some(&mut db), &dout, &inp, &w, m, k, n);
    assert_gradient("matmul dinp", &inp, &dinp, |x| loss(x, &w, &b), 100);
    assert_gradient("matmul dweight", &w, &dw, |x| loss(&inp, x, &b), 100);
    assert_gradient("matmul dbias", &b, &db, |x| loss(&inp, &w, x), 100);
}

#[test]
fn classifier_backward_reference_matches_finite_differences() {
    let (m, c, v) = (2, 5, 7);
    let mut rng = Rng::new(22);
    let x = to_f64(&rng.vec_uniform(m * c, -1.0, 1.0));
    let wte = to_f64(&rng.vec_uniform(v * c, -1.0, 1.0));
    let dlogits = to_f64(&rng.vec_uniform(m * v, -1.0, 1.0));
    let loss = |x: &[f64], wte: &[f64]| {
        let mut logits = vec![0f64; m * v];
        cpu::classifier_forward(&mut logits, x, wte, m, c, v);
        logits.iter().zip(&dlogits).map(|(l, d)| l * d).sum::<f64>()
    };
    let (mut dx, mut dwte) = (vec![0f64; m * c], vec![0f64; v * c]);
    cpu::classifier_backward(&mut dx, &mut dwte, &dlogits, &x, &wte, m, c, v);
    assert_gradient("classifier dx", &x, &dx, |p| loss(p, &wte), 100);
    assert_gradient("classifier dwte", &wte, &dwte, |p| loss(&x, p), 100);
}

/// Gradients of one matmul layer after `matmul_backward` added into `prior` values.
struct LayerGrads {
    dinp: Vec<f32>,
    dweight: Vec<f32>,
    dbias: Option<Vec<f32>>,
}

/// Random inputs and prior gradients of a layer of size (M, K, N).
struct LayerCase {
    size: (usize, usize, usize),
    inp: Vec<f32>,
    w: Vec<f32>,
    dout: Vec<f32>,
    dinp0: Vec<f32>,
    dw0: Vec<f32>,
    db0: Vec<f32>,
}

impl LayerCase {
    fn new(rng: &mut Rng, (m, k, n): (usize, usize, usize)) -> Self {
        LayerCase {
            size: (m, k, n),
            inp: rng.vec_uniform(m * k, -1.0, 1.0),
            w: rng.vec_normal(k * n, 0.1),
            dout: rng.vec_uniform(m * n, -1.0, 1.0),
            dinp0: rng.vec_uniform(m * k, -1.0, 1.0),
            dw0: rng.vec_uniform(k * n, -1.0, 1.0),
            db0: rng.vec_uniform(n, -1.0, 1.0),
        }
    }

    fn run(&self, ctx: &GpuContext, with_bias: bool) -> LayerGrads {
        let (m, k, n) = self.size;
        let dinp = upload(ctx, "dinp", &[m, k], &self.dinp0);
        let dweight = upload(ctx, "dweight", &[k, n], &self.dw0);
        let dbias = with_bias.then(|| upload(ctx, "dbias", &[n], &self.db0));
        let dout = upload(ctx, "dout", &[m, n], &self.dout);
        let inp = upload(ctx, "inp", &[m, k], &self.inp);
        let w = upload(ctx, "weight", &[k, n], &self.w);
        let mut s = Schedule::new("matmul_backward");
        matmul_backward(
            &mut s,
            ctx,
            &dinp,
            &dweight,
            dbias.as_ref(),
            &dout,
            &inp,
            &w,
            m,
            k,
            n,
        )
        .unwrap();
        s.run(ctx);
        LayerGrads {
            dinp: read(ctx, &dinp),
            dweight: read(ctx, &dweight),
            dbias: dbias.map(|t| read(ctx, &t)),
        }
    }

    fn check(&self, ctx: &GpuContext, with_bias: bool, what: &str) {
        let (m, k, n) = self.size;
        let got = self.run(ctx, with_bias);
        let mut dinp = to_f64(&self.dinp0);
        let mut dw = to_f64(&self.dw0);
        let mut db = to_f64(&self.db0);
        cpu::matmul_backward(
            &mut dinp,
            &mut dw,
            with_bias.then_some(db.as_mut_slice()),
            &to_f64(&self.dout),
            &to_f64(&self.inp),
            &to_f64(&self.w),
            m,
            k,
            n,
        );
        let name = |t: &str| format!("matmul_backward {t} {m}x{k}x{n} {what}");
        assert_close64(&name("dinp"), &got.dinp, &dinp, 1e-4, 1e-3);
        assert_close64(&name("dweight"), &got.dweight, &dw, 1e-4, 1e-3);
        if let Some(gb) = &got.dbias {
            assert_close64(&name("dbias"), gb, &db, 1e-4, 1e-3);
        }
    }
}

#[test]
fn matmul_backward_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(31);
        // T = 1 (gemv dinp), odd sizes, and GPT-2's attention projection at B·T = 64.
        for size in [
            (1, 768, 3072),
            (3, 13, 5),
            (7, 13, 5),
            (127, 129, 65),
            (64, 768, 768),
        ] {
            let case = LayerCase::new(&mut rng, size);
            case.check(ctx, true, "");
            if size == (7, 13, 5) {
                case.check(ctx, false, "without bias");
            }
        }
    });
}

/// A binding limit under which each (rows, row_elems) tensor of `tensors` splits into
/// about 3 or more row chunks (callers assert how many): the smallest limit that gives
/// one of them a third of its rows per chunk, raised to the largest chunk any of them
/// cannot go below (one aligned group of rows).
fn limit_for_chunks(ctx: &GpuContext, tensors: &[(usize, usize)]) -> u64 {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // (bytes of one aligned group of rows, bytes of a third of the rows rounded up to groups)
    let sizes: Vec<(u64, u64)> = tensors
        .iter()
        .map(|&(rows, row_elems)| {
            let row_bytes = row_elems as u64 * 4;
            let quantum = align / gcd(align, row_bytes);
            let third = (rows as u64).div_ceil(3).div_ceil(quantum) * quantum;
            (quantum * row_bytes, third * row_bytes)
        })
        .collect();
    let smallest = sizes.iter().map(|s| s.1).min().unwrap();
    let floor = sizes.iter().map(|s| s.0).max().unwrap();
    smallest.max(floor)
}

/// Assert that each (rows, row_elems) tensor is bound in at least 3 chunks.
fn assert_three_chunks(ctx: &GpuContext, tensors: &[(usize, usize)]) {
    for &(rows, row_elems) in tensors {
        let chunks = ctx.row_chunks(rows, row_elems).len();
        assert!(
            chunks >= 3,
            "({rows}, {row_elems}) is bound in {chunks} chunks"
        );
    }
}

#[test]
fn matmul_backward_in_row_chunks_matches_reference() {
    let mut rng = Rng::new(32);
    let (m, k, n) = (192, 80, 48);
    let case = LayerCase::new(&mut rng, (m, k, n));
    for ctx in test_contexts(&Needs::default()) {
        // inp and dinp (M, K), weight and dweight (K, N), dout (M, N) all split.
        let tensors = [(m, k), (k, n), (m, n)];
        let limit = limit_for_chunks(&ctx, &tensors);
        let ctx = ctx.with_binding_limit(limit);
        assert_three_chunks(&ctx, &tensors);
        case.check(&ctx, true, "in row chunks");
    }
}

/// The classifier's operands and prior gradients at (M, C, V).
struct ClassifierCase {
    size: (usize, usize, usize),
    x: Vec<f32>,
    wte: Vec<f32>,
    dlogits: Vec<f32>,
    dx0: Vec<f32>,
    /// None: dwte starts at zero (saves 2 copies of wte at GPT-2's vocabulary).
    dwte0: Option<Vec<f32>>,
}

impl ClassifierCase {
    fn new(rng: &mut Rng, (m, c, v): (usize, usize, usize), dwte_prior: bool) -> Self {
        ClassifierCase {
            size: (m, c, v),
            x: rng.vec_uniform(m * c, -1.0, 1.0),
            wte: rng.vec_uniform(v * c, -0.05, 0.05),
            dlogits: rng.vec_uniform(m * v, -1.0, 1.0),
            dx0: rng.vec_uniform(m * c, -1.0, 1.0),
            dwte0: dwte_prior.then(|| rng.vec_uniform(v * c, -1.0, 1.0)),
        }
    }

    /// (logits, dx, dwte) from one schedule of forward and backward.
    fn run(&self, ctx: &GpuContext) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (m, c, v) = self.size;
        let x = upload(ctx, "x", &[m, c], &self.x);
        let wte = upload(ctx, "wte", &[v, c], &self.wte);
        let dlogits = upload(ctx, "dlogits", &[m, v], &self.dlogits);
        let logits = Tensor::zeros(ctx, "logits", &[m, v], DType::F32).unwrap();
        let dx = upload(ctx, "dx", &[m, c], &self.dx0);
        let dwte = match &self.dwte0 {
            Some(d) => upload(ctx, "dwte", &[v, c], d),
            None => Tensor::zeros(ctx, "dwte", &[v, c], DType::F32).unwrap(),
        };
        let mut s = Schedule::new("classifier");
        classifier_forward(&mut s, ctx, &logits, &x, &wte, m, c, v).unwrap();
        classifier_backward(&mut s, ctx, &dx, &dwte, &dlogits, &x, &wte, m, c, v).unwrap();
        s.run(ctx);
        (read(ctx, &logits), read(ctx, &dx), read(ctx, &dwte))
    }

    fn check(&self, ctx: &GpuContext, what: &str) {
        let (m, c, v) = self.size;
        let (logits, dx, dwte) = self.run(ctx);
        let (x64, wte64) = (to_f64(&self.x), to_f64(&self.wte));
        let mut want = vec![0f64; m * v];
        cpu::classifier_forward(&mut want, &x64, &wte64, m, c, v);
        let name = |t: &str| format!("{t} M={m} C={c} V={v} {what}");
        assert_close64(&name("classifier_forward"), &logits, &want, 1e-4, 1e-3);
        drop(want);
        let mut want_dx = to_f64(&self.dx0);
        let mut want_dwte = match &self.dwte0 {
            Some(d) => to_f64(d),
            None => vec![0f64; v * c],
        };
        let dl64 = to_f64(&self.dlogits);
        cpu::classifier_backward(&mut want_dx, &mut want_dwte, &dl64, &x64, &wte64, m, c, v);
        assert_close64(&name("classifier_backward dx"), &dx, &want_dx, 1e-4, 1e-3);
        assert_close64(
            &name("classifier_backward dwte"),
            &dwte,
            &want_dwte,
            1e-4,
            1e-3,
        );
    }
}

#[test]
fn classifier_in_row_chunks_matches_reference() {
    let mut rng = Rng::new(41);
    // (M, C, V). With 256-byte binding alignment a chunk of V = 101 or 509 floats a row
    // holds a multiple of 64 rows, so logits need M > 128 to split in 3; C = 192 keeps
    // the blocks large enough for the 64×64 tile not to cost seconds on lavapipe.
    for (m, c, v) in [(192, 192, 101), (384, 192, 509)] {
        let case = ClassifierCase::new(&mut rng, (m, c, v), true);
        let decode = ClassifierCase::new(&mut rng, (3, c, v), true);
        for ctx in test_contexts(&Needs::default()) {
            // logits and dlogits (M, V), x and dx (M, C), wte and dwte (V, C) all split.
            let tensors = [(m, v), (m, c), (v, c)];
            let limit = limit_for_chunks(&ctx, &tensors);
            let ctx = ctx.with_binding_limit(limit);
            assert_three_chunks(&ctx, &tensors);
            case.check(&ctx, "in row chunks");
            // Decoding (the gemv path), wte still in chunks.
            decode.check(&ctx, "in row chunks");
        }
    }
}

#[test]
fn classifier_at_gpt2_vocabulary_matches_reference() {
    on_each_adapter(|ctx| {
        let (m, c, v) = (4, 768, 50257);
        // wte is 147 MiB: more than one binding at WebGPU's default limit.
        assert!(ctx.row_chunks(v, c).len() >= 2);
        let mut rng = Rng::new(43);
        ClassifierCase::new(&mut rng, (m, c, v), false).check(ctx, "");
    });
}

#[test]
fn new_entry_points_are_deterministic() {
    let mut rng = Rng::new(51);
    let layer = LayerCase::new(&mut rng, (127, 129, 65));
    let decode = LayerCase::new(&mut rng, (3, 768, 3072));
    let chunked = ClassifierCase::new(&mut rng, (192, 192, 101), true);
    let decode_classifier = ClassifierCase::new(&mut rng, (1, 768, 509), true);
    let twice = |what: &str, f: &dyn Fn() -> Vec<Vec<f32>>| {
        let (first, again) = (f(), f());
        for (i, (x, y)) in first.iter().zip(&again).enumerate() {
            assert!(
                same_bits(x, y),
                "{what}: output {i} differs on a second run"
            );
        }
    };
    for ctx in test_contexts(&Needs::default()) {
        twice("matmul_forward_gemv", &|| {
            let (m, k, n) = decode.size;
            let (inp, w) = (&decode.inp, &decode.w);
            vec![run_forward(&ctx, inp, w, Some(&decode.db0), (m, k, n))]
        });
        twice("matmul_backward", &|| {
            let g = layer.run(&ctx, true);
            vec![g.dinp, g.dweight, g.dbias.unwrap()]
        });
        twice("matmul_backward_bias", &|| {
            let (m, _, n) = layer.size;
            let dbias = upload(&ctx, "dbias", &[n], &layer.db0);
            let dout = upload(&ctx, "dout", &[m, n], &layer.dout);
            let mut s = Schedule::new("matmul_backward_bias");
            matmul_backward_bias(&mut s, &ctx, &dbias, &dout, m, n).unwrap();
            s.run(&ctx);
            vec![read(&ctx, &dbias)]
        });
        twice("classifier_forward/backward, gemv", &|| {
            let (l, dx, dwte) = decode_classifier.run(&ctx);
            vec![l, dx, dwte]
        });
        let limit = limit_for_chunks(&ctx, &[(192, 101), (192, 192), (101, 192)]);
        let ctx = ctx.with_binding_limit(limit);
        twice("classifier_forward/backward in row chunks", &|| {
            let (l, dx, dwte) = chunked.run(&ctx);
            vec![l, dx, dwte]
        });
    }
}

/// One operand of a batched product as the test lays it out: (offset, ld, s1, s2).
type Layout = (usize, usize, usize, usize);

/// out[z] (M, N) (+)= op(a[z]) · op(w[z]) over the batch (nb, nh), in f64.
#[allow(clippy::too_many_arguments)]
fn batched_reference(
    gemm: Gemm,
    out: &mut [f64],
    (oo, ldo, so1, so2): Layout,
    a: &[f32],
    (oa, lda, sa1, sa2): Layout,
    w: &[f32],
    (ow, ldw, sw1, sw2): Layout,
    (nb, nh): (usize, usize),
    (m, k, n): (usize, usize, usize),
) {
    for zb in 0..nb {
        for zh in 0..nh {
            let (bo, ba, bw) = (
                oo + zb * so1 + zh * so2,
                oa + zb * sa1 + zh * sa2,
                ow + zb * sw1 + zh * sw2,
            );
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0;
                    for l in 0..k {
                        let x = if gemm.trans_a {
                            a[ba + l * lda + i]
                        } else {
                            a[ba + i * lda + l]
                        };
                        let y = if gemm.trans_b {
                            w[bw + j * ldw + l]
                        } else {
                            w[bw + l * ldw + j]
                        };
                        acc += x as f64 * y as f64;
                    }
                    let o = &mut out[bo + i * ldo + j];
                    *o = if gemm.accumulate { *o + acc } else { acc };
                }
            }
        }
    }
}

fn strided(t: &Tensor, (off, ld, s1, s2): Layout) -> Strided<'_> {
    Strided { t, off, ld, s1, s2 }
}

/// `matmul_batched` as attention's matmul form uses it, per (batch row, head) of a
/// (B, T, 3C) qkv: scores = q·kᵀ, dq += ds·k and dv += pᵀ·dout, on every kernel family
/// that can run it (the tiled kernel, GPUs' choice, and the subgroup kernels, CPU
/// adapters'), at T with tails, over several tiles and with vec4 strides, against f64.
#[test]
fn matmul_batched_matches_reference() {
    let nt = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    let nn_acc = Gemm {
        accumulate: true,
        ..Gemm::default()
    };
    let tn_acc = Gemm {
        trans_a: true,
        accumulate: true,
        ..Gemm::default()
    };
    for ctx in test_contexts(&Needs::default()) {
        // The rows family runs these on the subgroup kernel too.
        for family in [MatmulKernel::Tiled, MatmulKernel::Subgroup] {
            let ctx = &reopen(&ctx).with_matmul_kernel(family);
            if ctx.matmul_kernel() != family {
                eprintln!(
                    "[wgformer test] {}: {family:?} not available",
                    ctx.adapter_name()
                );
                continue;
            }
            for (nb, t, nh, hs) in [(2, 37, 3, 6), (1, 150, 2, 8), (2, 64, 2, 16)] {
                let c = nh * hs;
                let mut rng = Rng::new(71 + t as u64);
                let qkv = rng.vec_uniform(nb * t * 3 * c, -1.0, 1.0);
                let prior = rng.vec_uniform(nb * t * c, -1.0, 1.0);
                let dout = rng.vec_uniform(nb * t * c, -1.0, 1.0);
                let heads = |part: usize| (part * c, 3 * c, t * 3 * c, hs);
                let per_head = (0, c, t * c, hs);
                let scores = (0, t, nh * t * t, t * t);
                let tq = upload(ctx, "qkv", &[nb * t, 3 * c], &qkv);
                let ts = Tensor::zeros(ctx, "scores", &[nb * nh * t * t], DType::F32).unwrap();
                let td = upload(ctx, "dq", &[nb * t, c], &prior);
                let tdv = upload(ctx, "dv", &[nb * t, c], &prior);
                let tdo = upload(ctx, "dout", &[nb * t, c], &dout);
                let v = strided;
                let mut s = Schedule::new("matmul_batched");
                let b = (nb, nh);
                matmul_batched(
                    &mut s,
                    ctx,
                    nt,
                    v(&ts, scores),
                    v(&tq, heads(0)),
                    v(&tq, heads(1)),
                    b,
                    t,
                    hs,
                    t,
                )
                .unwrap();
                matmul_batched(
                    &mut s,
                    ctx,
                    nn_acc,
                    v(&td, per_head),
                    v(&ts, scores),
                    v(&tq, heads(1)),
                    b,
                    t,
                    t,
                    hs,
                )
                .unwrap();
                matmul_batched(
                    &mut s,
                    ctx,
                    tn_acc,
                    v(&tdv, per_head),
                    v(&ts, scores),
                    v(&tdo, per_head),
                    b,
                    t,
                    t,
                    hs,
                )
                .unwrap();
                s.run(ctx);
                let mut want_s = vec![0.0; nb * nh * t * t];
                batched_reference(
                    nt,
                    &mut want_s,
                    scores,
                    &qkv,
                    heads(0),
                    &qkv,
                    heads(1),
                    b,
                    (t, hs, t),
                );
                let got_s = read(ctx, &ts);
                let what = format!("{:?} T={t} HS={hs}", ctx.matmul_kernel());
                assert_close64(
                    &format!("{what} scores = q·kᵀ"),
                    &got_s,
                    &want_s,
                    1e-5,
                    1e-4,
                );
                // The products after it read the GPU's scores, so the reference does too.
                let mut want_dq = to_f64(&prior);
                batched_reference(
                    nn_acc,
                    &mut want_dq,
                    per_head,
                    &got_s,
                    scores,
                    &qkv,
                    heads(1),
                    b,
                    (t, t, hs),
                );
                assert_close64(
                    &format!("{what} dq += ds·k"),
                    &read(ctx, &td),
                    &want_dq,
                    1e-4,
                    1e-4,
                );
                let mut want_dv = to_f64(&prior);
                batched_reference(
                    tn_acc,
                    &mut want_dv,
                    per_head,
                    &got_s,
                    scores,
                    &dout,
                    per_head,
                    b,
                    (t, t, hs),
                );
                assert_close64(
                    &format!("{what} dv += pᵀ·dout"),
                    &read(ctx, &tdv),
                    &want_dv,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

/// dbias summed in slabs of rows (more than [`BIAS_ONE_SLAB_ROWS`] rows), with taller
/// slabs past BIAS_SLAB² rows, and with dout bound in row chunks: the reference's sums,
/// the same bits on a second run.
#[test]
fn matmul_backward_bias_in_slabs() {
    let mut rng = Rng::new(53);
    let tall = BIAS_SLAB * BIAS_SLAB + 100;
    let cases = [(BIAS_ONE_SLAB_ROWS + 17, 70), (tall, 9), (2000, 64)];
    for ctx in test_contexts(&Needs::default()) {
        for (i, &(m, n)) in cases.iter().enumerate() {
            let dout = rng.vec_uniform(m * n, -1.0, 1.0);
            let prior = rng.vec_uniform(n, -1.0, 1.0);
            // The last case with dout in three row chunks of three slabs each.
            let ctx = match i {
                2 => {
                    let limit = limit_for_chunks(&ctx, &[(m, n)]);
                    let chunked = reopen(&ctx).with_binding_limit(limit);
                    assert_eq!(chunked.row_chunks(m, n).len(), 3);
                    chunked
                }
                _ => reopen(&ctx),
            };
            let run = || {
                let dbias = upload(&ctx, "dbias", &[n], &prior);
                let d = upload(&ctx, "dout", &[m, n], &dout);
                let mut s = Schedule::new("matmul_backward_bias");
                matmul_backward_bias(&mut s, &ctx, &dbias, &d, m, n).unwrap();
                s.run(&ctx);
                (read(&ctx, &dbias), s.launch_labels().len())
            };
            let (got, launches) = run();
            // A launch per row chunk, then the one that adds the slabs' sums.
            let chunks = ctx.row_chunks(m, n).len();
            assert_eq!(launches, chunks + 1, "M={m} N={n}: not summed in slabs");
            let mut want = vec![0.0; n];
            cpu::matmul_backward_bias(&mut want, &to_f64(&dout), m, n);
            let what = format!("matmul_backward_bias M={m} N={n}");
            let cl = assert_close64(&what, &got, &plus(&prior, &want), 1e-4, 1e-4);
            eprintln!("{what}: max |Δ| {:.1e}", cl.max_abs);
            assert!(same_bits(&got, &run().0), "{what}: a second run differs");
        }
    }
}

/// Every matmul kernel family (tiled with workgroup memory; rows without it; subgroup,
/// which CPU adapters with subgroups use by default) gives the reference's answer for
/// every form, including the tails (M not a multiple of 16, N not a multiple of 4 or of
/// 32, K not a multiple of 8). The subgroup kernel runs where the device has fixed-size
/// subgroups, and lavapipe (Vulkan on a CPU) must have them.
#[test]
fn every_matmul_kernel_matches_reference() {
    for ctx in test_contexts(&Needs::default()) {
        let lavapipe = ctx.info.backend == wgpu::Backend::Vulkan
            && ctx.info.device_type == wgpu::DeviceType::Cpu;
        assert!(
            !lavapipe || ctx.subgroup_size().is_some(),
            "{}: a Vulkan CPU adapter without fixed-size subgroups",
            ctx.adapter_name()
        );
        on_each_matmul_kernel(&ctx, |ctx| {
            let kernel = ctx.matmul_kernel();
            let mut rng = Rng::new(21);
            for size in [
                (17, 64, 48),
                (65, 132, 68),
                (40, 48, 101),
                (33, 96, 12),
                (16, 7, 5),
            ] {
                check_gemm_forms(ctx, &mut rng, size);
            }
            let (m, k, n) = (37, 80, 144);
            let inp = rng.vec_uniform(m * k, -1.0, 1.0);
            let w = rng.vec_normal(k * n, 0.1);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            let got = run_forward(ctx, &inp, &w, Some(&bias), (m, k, n));
            let mut want = vec![0f64; m * n];
            let b64 = to_f64(&bias);
            cpu::matmul_forward(&mut want, &to_f64(&inp), &to_f64(&w), Some(&b64), m, k, n);
            assert_close64(&format!("{kernel:?} forward"), &got, &want, 1e-4, 1e-3);
        });
    }
}

/// A second context on the same device with another matmul kernel.
fn ctx_with(ctx: &GpuContext, kernel: MatmulKernel) -> GpuContext {
    reopen(ctx).with_matmul_kernel(kernel)
}

/// Inputs of a GELU: mostly in [-4, 4], where it bends, every 17th at ±12, where its
/// tanh is clamped.
fn gelu_inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = rng.vec_uniform(n, -4.0, 4.0);
    for (i, x) in v.iter_mut().enumerate().skip(5).step_by(17) {
        *x = if i % 2 == 0 { 12.0 } else { -12.0 };
    }
    v
}

fn gelu64(x: &[f32]) -> Vec<f64> {
    let mut g = vec![0f64; x.len()];
    cpu_gelu::gelu_forward(&mut g, &to_f64(x), x.len());
    g
}

/// Index of the first element whose bits differ, if any.
fn first_bit_difference(a: &[f32], b: &[f32]) -> Option<(usize, f32, f32)> {
    assert_eq!(a.len(), b.len());
    (0..a.len())
        .find(|&i| a[i].to_bits() != b[i].to_bits())
        .map(|i| (i, a[i], b[i]))
}

/// out (+)= gelu(op(a)) · op(w) (+ bias) in the form `gemm`, with a and w as stored:
/// `fused` by the matmul (a_gelu), or gelu_forward into a tensor, then the plain form.
#[allow(clippy::too_many_arguments)]
fn run_gelu_in(
    ctx: &GpuContext,
    gemm: Gemm,
    fused: bool,
    a_stored: &[f32],
    w: &Tensor,
    bias: Option<&[f32]>,
    prior: &[f32],
    (m, k, n): (usize, usize, usize),
) -> Vec<f32> {
    let ta = upload(ctx, "fch", &[a_stored.len()], a_stored);
    let tb = bias.map(|b| upload(ctx, "bias", &[n], b));
    let to = upload(ctx, "out", &[m, n], prior);
    let mut s = Schedule::new("gelu in");
    if fused {
        let form = Gemm {
            a_gelu: true,
            ..gemm
        };
        form.record(&mut s, ctx, &to, &ta, w, tb.as_ref(), m, k, n)
            .unwrap();
    } else {
        let tg = Tensor::zeros(ctx, "fch_gelu", &[a_stored.len()], DType::F32).unwrap();
        gelu_forward(&mut s, ctx, &tg, &ta, a_stored.len()).unwrap();
        gemm.record(&mut s, ctx, &to, &tg, w, tb.as_ref(), m, k, n)
            .unwrap();
    }
    s.run(ctx);
    read(ctx, &to)
}

/// The A_GELU forms at (M, K, N): the MLP projection's forward (bias) and its dweight
/// form (TRANS_A, ACCUMULATE), against the reference of gelu then the product, and bit
/// for bit against gelu_forward then the plain form. M ≤ 4 takes the gemv kernels.
fn check_gelu_in_forms(ctx: &GpuContext, rng: &mut Rng, (m, k, n): (usize, usize, usize)) {
    let a = gelu_inputs(rng, m * k); // (M, K)
    let w = rng.vec_normal(k * n, 0.1); // (K, N)
    let bias = rng.vec_uniform(n, -0.5, 0.5);
    let prior = rng.vec_uniform(m * n, -1.0, 1.0);
    let tw = upload(ctx, "w", &[k, n], &w);
    let mut plain = vec![0f64; m * n];
    cpu::matmul_forward(&mut plain, &gelu64(&a), &to_f64(&w), None, m, k, n);
    for (trans_a, accumulate, with_bias) in [(false, false, true), (true, true, false)] {
        let gemm = Gemm {
            trans_a,
            accumulate,
            ..Gemm::default()
        };
        let a_stored = stored(&a, m, k, trans_a);
        let b = with_bias.then_some(bias.as_slice());
        let run = |fused| run_gelu_in(ctx, gemm, fused, &a_stored, &tw, b, &prior, (m, k, n));
        let (fused, unfused) = (run(true), run(false));
        let want: Vec<f64> = (0..m * n)
            .map(|i| {
                plain[i]
                    + if with_bias { bias[i % n] as f64 } else { 0.0 }
                    + if accumulate { prior[i] as f64 } else { 0.0 }
            })
            .collect();
        let name = format!("{gemm:?} a_gelu {m}x{k}x{n} bias={with_bias}");
        assert_close64(&name, &fused, &want, 1e-4, 1e-3);
        if let Some((i, x, y)) = first_bit_difference(&fused, &unfused) {
            panic!("{name}: fused {x:e} != gelu_forward + matmul {y:e} at {i}");
        }
    }
}

/// Every kernel family (tiled, rows, subgroup, and the gemv kernels of each for M ≤ 4)
/// applies A_GELU with gelu_forward's function: the reference's answer, and the same
/// bits as gelu_forward followed by the plain form.
#[test]
fn every_matmul_kernel_applies_gelu_in_as_gelu_forward() {
    for ctx in test_contexts(&Needs::default()) {
        on_each_matmul_kernel(&ctx, |ctx| {
            let mut rng = Rng::new(61);
            for size in [
                (37, 80, 144),
                (17, 64, 48),
                (65, 132, 68),
                (16, 7, 5),
                (1, 768, 80),
                (2, 13, 5),
                (3, 130, 67),
                (4, 40, 128),
            ] {
                check_gelu_in_forms(ctx, &mut rng, size);
            }
        });
    }
}

/// `matmul_forward_gelu_in` and `matmul_backward_gelu_in` at GPT-2 MLP projection shapes
/// (M = B·T, K = 4C, N = C; M = 1 decodes): the reference's values and the same bits as
/// gelu_forward into fch_gelu, then matmul_forward / matmul_backward of it. With w in
/// f16 too where the device has shader-f16.
#[test]
fn matmul_gelu_in_launchers_match_gelu_forward_then_matmul() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(62);
        for (m, k, n) in [(64, 512, 128), (1, 3072, 768), (33, 200, 52)] {
            let fch = gelu_inputs(&mut rng, m * k);
            let w = rng.vec_normal(k * n, 0.05);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            let dout = rng.vec_uniform(m * n, -1.0, 1.0);
            let (dg0, dw0, db0) = (
                rng.vec_uniform(m * k, -1.0, 1.0),
                rng.vec_uniform(k * n, -1.0, 1.0),
                rng.vec_uniform(n, -1.0, 1.0),
            );
            let name = |t: &str| format!("{t} {m}x{k}x{n}");
            let mut weights = vec![("f32", upload(ctx, "weight", &[k, n], &w))];
            if ctx.has_f16() {
                let w16 = Tensor::from_f32_as_f16(ctx, "weight16", &[k, n], &w).unwrap();
                weights.push(("f16", w16));
            }
            let tfch = upload(ctx, "fch", &[m, k], &fch);
            let tb = upload(ctx, "bias", &[n], &bias);
            let tdout = upload(ctx, "dout", &[m, n], &dout);
            for (dtype, tw) in &weights {
                // [fused, unfused] × (out, dgelu, dweight, dbias)
                let runs: Vec<[Vec<f32>; 4]> = [true, false]
                    .iter()
                    .map(|&fused| {
                        let out = Tensor::zeros(ctx, "fcproj", &[m, n], DType::F32).unwrap();
                        let dg = upload(ctx, "dfch_gelu", &[m, k], &dg0);
                        let dw = upload(ctx, "dweight", &[k, n], &dw0);
                        let db = upload(ctx, "dbias", &[n], &db0);
                        let mut s = Schedule::new("mlp projection");
                        if fused {
                            matmul_forward_gelu_in(
                                &mut s,
                                ctx,
                                &out,
                                &tfch,
                                tw,
                                Some(&tb),
                                m,
                                k,
                                n,
                            )
                            .unwrap();
                            matmul_backward_gelu_in(
                                &mut s,
                                ctx,
                                &dg,
                                &dw,
                                Some(&db),
                                &tdout,
                                &tfch,
                                tw,
                                m,
                                k,
                                n,
                            )
                            .unwrap();
                        } else {
                            let g = Tensor::zeros(ctx, "fch_gelu", &[m, k], DType::F32).unwrap();
                            gelu_forward(&mut s, ctx, &g, &tfch, m * k).unwrap();
                            matmul_forward(&mut s, ctx, &out, &g, tw, Some(&tb), m, k, n).unwrap();
                            matmul_backward(
                                &mut s,
                                ctx,
                                &dg,
                                &dw,
                                Some(&db),
                                &tdout,
                                &g,
                                tw,
                                m,
                                k,
                                n,
                            )
                            .unwrap();
                        }
                        s.run(ctx);
                        [&out, &dg, &dw, &db].map(|t| read(ctx, t))
                    })
                    .collect();
                let what = ["out", "dgelu", "dweight", "dbias"];
                for (i, what) in what.iter().enumerate() {
                    if let Some((j, x, y)) = first_bit_difference(&runs[0][i], &runs[1][i]) {
                        panic!(
                            "{} w {dtype}: fused {x:e} != unfused {y:e} at {j}",
                            name(what)
                        );
                    }
                }
                if *dtype == "f16" {
                    continue; // the f16 kernels' values: tests/f16.rs
                }
                let g = gelu64(&fch);
                let mut want = vec![0f64; m * n];
                cpu::matmul_forward(&mut want, &g, &to_f64(&w), Some(&to_f64(&bias)), m, k, n);
                assert_close64(
                    &name("matmul_forward_gelu_in"),
                    &runs[0][0],
                    &want,
                    1e-4,
                    1e-3,
                );
                let (mut dg, mut dw, mut db) = (to_f64(&dg0), to_f64(&dw0), to_f64(&db0));
                cpu::matmul_backward(
                    &mut dg,
                    &mut dw,
                    Some(&mut db),
                    &to_f64(&dout),
                    &g,
                    &to_f64(&w),
                    m,
                    k,
                    n,
                );
                let got = &runs[0];
                assert_close64(&name("backward dgelu"), &got[1], &dg, 1e-4, 1e-3);
                assert_close64(&name("backward dweight"), &got[2], &dw, 1e-4, 1e-3);
                assert_close64(&name("backward dbias"), &got[3], &db, 1e-4, 1e-3);
            }
        }
    });
}

/// The tiled kernel at every tile shape the tuner may choose (4×4 and 8×8 register
/// blocks), in all four transpositions, accumulating or with a bias, and with the GELU
/// on a: the reference's answer, with tails in M, N and K (and K shorter than a slice).
/// Where every operand's contiguous extent, stride and offset are multiples of 4 the
/// launcher must pick the vec4 staging (`matmul_vec4`), else the element-wise one; each
/// output is one FMA chain over k in order either way, so every shape and both stagings
/// give the same bits. Split in two tests by register block so that the test threads
/// share the compiles (a cold cache compiles each form at every shape).
fn check_tile_shapes(tiles: &[TileConfig]) {
    on_each_adapter(|ctx| {
        let ctx = ctx_with(ctx, MatmulKernel::Tiled);
        let mut rng = Rng::new(71);
        // (M, K, N): multiples of 4 (every form vec4); tails in each; K < one slice.
        for (m, k, n) in [(68, 36, 132), (65, 132, 67), (40, 7, 101), (129, 33, 130)] {
            let a = gelu_inputs(&mut rng, m * k); // (M, K)
            let w = rng.vec_uniform(k * n, -1.0, 1.0); // (K, N)
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            let prior = rng.vec_uniform(m * n, -1.0, 1.0);
            let mut forms = Vec::new();
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    for accumulate in [false, true] {
                        forms.push(Gemm {
                            trans_a,
                            trans_b,
                            accumulate,
                            a_gelu: false,
                        });
                    }
                }
                forms.push(Gemm {
                    trans_a,
                    a_gelu: true,
                    ..Gemm::default()
                });
            }
            for gemm in forms {
                let a_stored = stored(&a, m, k, gemm.trans_a);
                let w_stored = stored(&w, k, n, gemm.trans_b);
                let with_bias = !gemm.accumulate;
                let mut want = vec![0f64; m * n];
                let a64 = if gemm.a_gelu { gelu64(&a) } else { to_f64(&a) };
                let b64 = to_f64(&bias);
                let b = with_bias.then_some(b64.as_slice());
                cpu::matmul_forward(&mut want, &a64, &to_f64(&w), b, m, k, n);
                if gemm.accumulate {
                    want = plus(&prior, &want);
                }
                // Whole tensors: each operand's stride is its contiguous extent.
                let vec4 = (if gemm.trans_a { m } else { k }).is_multiple_of(4)
                    && (if gemm.trans_b { k } else { n }).is_multiple_of(4);
                let mut first: Option<(TileConfig, Vec<f32>)> = None;
                for &tile in tiles {
                    ctx.set_tile_config(tile);
                    let ta = upload(&ctx, "a", &[a.len()], &a_stored);
                    let tw = upload(&ctx, "w", &[w.len()], &w_stored);
                    let tb = upload(&ctx, "bias", &[n], &bias);
                    let to = upload(&ctx, "out", &[m, n], &prior);
                    let mut s = Schedule::new("gemm");
                    let tb = with_bias.then_some(&tb);
                    gemm.record(&mut s, &ctx, &to, &ta, &tw, tb, m, k, n)
                        .unwrap();
                    let name = format!("{} {tile}: {gemm:?} {m}x{k}x{n}", ctx.adapter_name());
                    let labels = s.launch_labels();
                    let entry = if vec4 && !tile.element {
                        "matmul_vec4 "
                    } else {
                        "matmul "
                    };
                    assert!(
                        labels.len() == 1 && labels[0].starts_with(entry),
                        "{name}: expected one {entry}launch, got {labels:?}"
                    );
                    s.run(&ctx);
                    let got = read(&ctx, &to);
                    assert_close64(&name, &got, &want, 1e-4, 1e-3);
                    match &first {
                        None => first = Some((tile, got)),
                        Some((t0, bits)) => assert!(
                            first_bit_difference(bits, &got).is_none(),
                            "{name}: differs from {t0} at {:?}",
                            first_bit_difference(bits, &got)
                        ),
                    }
                }
            }
        }
        ctx.set_tile_config(TileConfig::DEFAULT);
    });
}

/// Every shape with 4×4 blocks (the default among them).
#[test]
fn every_tile_shape_with_4x4_blocks_matches_reference() {
    let tiles: Vec<TileConfig> = TileConfig::CANDIDATES
        .into_iter()
        .filter(|t| t.rb == 4)
        .collect();
    assert_eq!(tiles[0], TileConfig::DEFAULT);
    check_tile_shapes(&tiles);
}

/// Every shape with 8×8 blocks, after the default shape, whose bits they must give too;
/// then the 128×128 tiles staged element by element where vec4 staging could run
/// (`WGFORMER_TILE=16,16,8,8,element`).
#[test]
fn every_tile_shape_with_8x8_blocks_matches_reference() {
    let element = TileConfig {
        element: true,
        ..TileConfig::new(16, 16, 8, 8)
    };
    let tiles: Vec<TileConfig> = std::iter::once(TileConfig::DEFAULT)
        .chain(TileConfig::CANDIDATES.into_iter().filter(|t| t.rb == 8))
        .chain([element])
        .collect();
    assert!(
        tiles.len() > 1
            && TileConfig::CANDIDATES
                .iter()
                .all(|t| t.rb == 4 || t.rb == 8)
    );
    check_tile_shapes(&tiles);
}

/// On adapters with the subgroup family, its kernels — the narrow one and, for blocks of
/// more than 16 rows and 64 columns on CPU adapters, the wide one with w read element by
/// element or as vec4 — give the tiled kernel's bits in every form: each output is one
/// FMA chain over k in order, with the bias or the prior out added after it.
#[test]
fn subgroup_kernels_give_the_tiled_kernels_bits() {
    // scripts/test runs this test again on lavapipe at 128-bit vectors, whose subgroups
    // have 4 lanes (the wide kernel runs its slices step by step there), and names the
    // size it must find.
    let lanes = std::env::var("WGFORMER_TEST_SUBGROUP_SIZE").ok().map(|v| {
        v.parse::<u32>()
            .expect("WGFORMER_TEST_SUBGROUP_SIZE: a lane count")
    });
    for ctx in test_contexts(&Needs::default()) {
        if let Some(lanes) = lanes {
            assert_eq!(
                ctx.subgroup_size(),
                Some(lanes),
                "{}: WGFORMER_TEST_SUBGROUP_SIZE asks for subgroups of {lanes}",
                ctx.adapter_name()
            );
        }
        if ctx.subgroup_size().is_none() {
            eprintln!(
                "[wgformer test] {}: no subgroups, so no subgroup kernels to compare",
                ctx.adapter_name()
            );
            continue;
        }
        let tiled = ctx_with(&ctx, MatmulKernel::Tiled);
        let subgroup = ctx_with(&ctx, MatmulKernel::Subgroup);
        if subgroup.matmul_kernel() != MatmulKernel::Subgroup {
            eprintln!(
                "[wgformer test] {}: subgroups, but matmuls run on the tiled kernel",
                ctx.adapter_name()
            );
            continue;
        }
        let mut rng = Rng::new(83);
        let mut kernels = std::collections::BTreeSet::new();
        // (M, K, N): wide with vec4 w in both layouts (K and N multiples of 4) and tails
        // in M, N and K's last slice; the same with M a multiple of 4, so the TRANS_A forms
        // read a as vec4 too (a last block of 4 rows); wide element-wise (N and K odd);
        // wide with 20 of its 64 rows; narrow (N ≤ 64 at 8 lanes; M ≤ 16 at every subgroup
        // size).
        for (m, k, n) in [
            (70, 132, 200),
            (68, 132, 200),
            (45, 37, 131),
            (20, 36, 132),
            (40, 36, 60),
            (12, 36, 60),
        ] {
            let a = gelu_inputs(&mut rng, m * k);
            let w = rng.vec_uniform(k * n, -1.0, 1.0);
            let bias = rng.vec_uniform(n, -0.5, 0.5);
            let prior = rng.vec_uniform(m * n, -1.0, 1.0);
            for (trans_a, trans_b, accumulate, a_gelu) in [
                (false, false, false, false),
                (false, true, true, false),
                (true, false, true, false),
                (true, true, false, true),
                (false, false, true, true),
            ] {
                let gemm = Gemm {
                    trans_a,
                    trans_b,
                    accumulate,
                    a_gelu,
                };
                let a_stored = stored(&a, m, k, trans_a);
                let w_stored = stored(&w, k, n, trans_b);
                let run = |c: &GpuContext| {
                    let ta = upload(c, "a", &[a.len()], &a_stored);
                    let tw = upload(c, "w", &[w.len()], &w_stored);
                    let tb = upload(c, "bias", &[n], &bias);
                    let to = upload(c, "out", &[m, n], &prior);
                    let mut s = Schedule::new("gemm");
                    let b = (!accumulate).then_some(&tb);
                    gemm.record(&mut s, c, &to, &ta, &tw, b, m, k, n).unwrap();
                    s.run(c);
                    let labels: Vec<String> =
                        s.launch_labels().iter().map(|l| l.to_string()).collect();
                    (read(c, &to), labels)
                };
                let (want, _) = run(&tiled);
                let (got, labels) = run(&subgroup);
                kernels.extend(kernel_names(&labels));
                assert!(
                    first_bit_difference(&want, &got).is_none(),
                    "{} {gemm:?} {m}x{k}x{n} on {labels:?}: differs from the tiled kernel at {:?}",
                    ctx.adapter_name(),
                    first_bit_difference(&want, &got)
                );
            }
        }
        let expected: &[&str] = if ctx.is_cpu() {
            &[
                "matmul_forward_subgroup",
                "matmul_subgroup_wide",
                "matmul_subgroup_wide_vec4",
                "matmul_subgroup_wide_vec4_ta",
            ]
        } else {
            &["matmul_forward_subgroup"]
        };
        assert_ran(&ctx.adapter_name(), &kernels, expected);
    }
}

/// The kernel each launch label names (its first word).
fn kernel_names<S: AsRef<str>>(labels: &[S]) -> impl Iterator<Item = String> + '_ {
    labels
        .iter()
        .map(|l| l.as_ref().split(' ').next().unwrap().to_string())
}

/// Exactly the `expected` kernels ran (each at least once).
fn assert_ran(what: &str, ran: &std::collections::BTreeSet<String>, expected: &[&str]) {
    assert!(
        ran.iter().eq(expected.iter()),
        "{what}: ran {ran:?}, expected {expected:?}"
    );
}
