//! The tied classifier fused with the loss over vocabulary chunks (kernels::classifier)
//! against the whole-logits CPU references (classifier_forward → crossentropy →
//! classifier_backward): chunks dividing V or not, one chunk, M ≤ 4 (the gemv matmul),
//! gradients added into what was there, operands bound in row pieces, with and without a
//! bias (BERT's masked-LM decoder); the single-chunk
//! launchers' argument checks; and the choice `ClassifierChunk::Auto` makes.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::classifier::{
    classifier_chunk_forward, classifier_crossentropy_backward, classifier_crossentropy_forward,
    classifier_crossentropy_loss, vocab_chunks, ClassifierChunk, ClassifierChunks,
    CLASSIFIER_CHUNK_BYTES, CLASSIFIER_CHUNK_THRESHOLD,
};
use wgformer::kernels::crossentropy::{IGNORE_INDEX, STATS_LEN};
use wgformer::reference::crossentropy as ce;
use wgformer::reference::matmul as mm;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, test_contexts, to_f64};

struct Case {
    m: usize,
    c: usize,
    v: usize,
    x: Vec<f32>,
    wte: Vec<f32>,
    targets: Vec<i32>,
    /// Initial dx and dwte: the backward adds into them.
    dx0: Vec<f32>,
    dwte0: Vec<f32>,
    /// The classifier's bias (V) and dbias's initial value, if it has one.
    bias: Option<(Vec<f32>, Vec<f32>)>,
}

fn case(rng: &mut Rng, m: usize, c: usize, v: usize) -> Case {
    let targets = (0..m)
        .map(|i| {
            if i % 5 == 1 {
                IGNORE_INDEX
            } else {
                rng.below(v as u64) as i32
            }
        })
        .collect();
    Case {
        m,
        c,
        v,
        x: rng.vec_normal(m * c, 1.0),
        wte: rng.vec_normal(v * c, 0.5),
        targets,
        dx0: rng.vec_normal(m * c, 0.01),
        dwte0: rng.vec_normal(v * c, 0.01),
        bias: None,
    }
}

/// A case whose classifier has a bias (V), as BERT's masked-LM decoder does.
fn case_with_bias(rng: &mut Rng, m: usize, c: usize, v: usize) -> Case {
    let k = case(rng, m, c, v);
    let bias = (rng.vec_normal(v, 1.0), rng.vec_normal(v, 0.01));
    Case {
        bias: Some(bias),
        ..k
    }
}

struct Got {
    losses: Vec<f32>,
    stats: Vec<f32>,
    dx: Vec<f32>,
    dwte: Vec<f32>,
    dbias: Option<Vec<f32>>,
}

fn run(ctx: &GpuContext, k: &Case, vc: usize, grad_scale: f32) -> Got {
    let (m, c, v) = (k.m, k.c, k.v);
    let x = Tensor::from_f32(ctx, "x", &[m, c], &k.x).unwrap();
    let wte = Tensor::from_f32(ctx, "wte", &[v, c], &k.wte).unwrap();
    let targets = Tensor::from_i32(ctx, "targets", &[m], &k.targets).unwrap();
    let dx = Tensor::from_f32(ctx, "dx", &[m, c], &k.dx0).unwrap();
    let dwte = Tensor::from_f32(ctx, "dwte", &[v, c], &k.dwte0).unwrap();
    let losses = Tensor::zeros(ctx, "losses", &[m], DType::F32).unwrap();
    let stats = Tensor::zeros(ctx, "stats", &[STATS_LEN], DType::F32).unwrap();
    let logits = Tensor::zeros(ctx, "logits chunk", &[m, vc], DType::F32).unwrap();
    let bias = k.bias.as_ref().map(|(b, db)| {
        let bias = Tensor::from_f32(ctx, "bias", &[v], b).unwrap();
        let dbias = Tensor::from_f32(ctx, "dbias", &[v], db).unwrap();
        (bias, dbias)
    });
    let chunks = if bias.is_some() {
        ClassifierChunks::with_bias(ctx, "test.", m, c, vc).unwrap()
    } else {
        ClassifierChunks::new(ctx, "test.", m, c, vc).unwrap()
    };
    let mut s = Schedule::new("classifier chunks");
    let b = bias.as_ref().map(|(b, _)| b);
    classifier_crossentropy_forward(
        &mut s, ctx, &chunks, &logits, &x, &wte, b, &targets, m, c, v,
    )
    .unwrap();
    classifier_crossentropy_loss(&mut s, ctx, &losses, &stats, &chunks, &targets, m, v).unwrap();
    let bd = bias.as_ref().map(|(b, db)| (b, db));
    classifier_crossentropy_backward(
        &mut s, ctx, &dx, &dwte, &chunks, &logits, &x, &wte, bd, &targets, &stats, m, c, v,
        grad_scale,
    )
    .unwrap();
    s.run(ctx);
    let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
    Got {
        losses: read(&losses),
        stats: read(&stats),
        dx: read(&dx),
        dwte: read(&dwte),
        dbias: bias.as_ref().map(|(_, db)| read(db)),
    }
}

/// Compare with the whole-logits references.
fn check(name: &str, got: &Got, k: &Case, grad_scale: f64) {
    let (m, c, v) = (k.m, k.c, k.v);
    let (x, wte) = (to_f64(&k.x), to_f64(&k.wte));
    let mut logits = vec![0f64; m * v];
    mm::classifier_forward(&mut logits, &x, &wte, m, c, v);
    if let Some((b, _)) = &k.bias {
        for (i, l) in logits.iter_mut().enumerate() {
            *l += b[i % v] as f64;
        }
    }
    let mut losses = vec![0f64; m];
    ce::crossentropy_forward(&mut losses, &logits, &k.targets, m, v);
    let mut stats = vec![0f64; STATS_LEN];
    ce::crossentropy_mean(&mut stats, &losses, &k.targets, m);
    let mut dlogits = vec![0f64; m * v];
    ce::crossentropy_backward(&mut dlogits, &logits, &k.targets, &stats, m, v, grad_scale);
    let (mut dx, mut dwte) = (to_f64(&k.dx0), to_f64(&k.dwte0));
    mm::classifier_backward(&mut dx, &mut dwte, &dlogits, &x, &wte, m, c, v);
    assert_close64(&format!("{name} losses"), &got.losses, &losses, 1e-4, 1e-3);
    assert_close64(&format!("{name} stats"), &got.stats, &stats, 1e-4, 1e-3);
    // Each gradient element sums ≤ max(M, V) terms of |dlogits| ≤ 1/count times |x| or
    // |wte| ~ 1.
    let atol = 1e-4 * (stats[2] * grad_scale) as f32 * (c as f32).sqrt();
    let d = assert_close64(&format!("{name} dx"), &got.dx, &dx, atol, 1e-3);
    let w = assert_close64(&format!("{name} dwte"), &got.dwte, &dwte, atol, 1e-3);
    eprintln!(
        "{name}: dx max |Δ| {:e}, dwte max |Δ| {:e} (atol {atol:e})",
        d.max_abs, w.max_abs
    );
    match (&k.bias, &got.dbias) {
        (Some((_, db0)), Some(db)) => {
            // dbias[j] = db0[j] + Σ_rows dlogits[i, j]
            let mut want = to_f64(db0);
            for (i, d) in dlogits.iter().enumerate() {
                want[i % v] += d;
            }
            assert_close64(&format!("{name} dbias"), db, &want, atol, 1e-3);
        }
        (None, None) => {}
        _ => panic!("{name}: a bias without its gradient"),
    }
}

/// (M, C, V, Vc)
const SIZES: [(usize, usize, usize, usize); 6] = [
    (51, 48, 101, 17),
    (51, 48, 101, 101),
    (3, 48, 101, 17),
    (130, 64, 509, 128),
    (70, 8, 1000, 333),
    (7, 5, 11, 1),
];

#[test]
fn classifier_crossentropy_chunks_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(99);
        for (m, c, v, vc) in SIZES {
            let k = case(&mut rng, m, c, v);
            let got = run(ctx, &k, vc, 1.0);
            check(&format!("M={m} C={c} V={v} Vc={vc}"), &got, &k, 1.0);
        }
        let k = case(&mut rng, 51, 48, 101);
        let got = run(ctx, &k, 17, 0.5);
        check("grad_scale 0.5", &got, &k, 0.5);
        // With a bias: chunks dividing V or not, one chunk, the gemv path.
        for (m, c, v, vc) in [(51, 48, 101, 17), (51, 48, 101, 101), (3, 48, 101, 25)] {
            let k = case_with_bias(&mut rng, m, c, v);
            let got = run(ctx, &k, vc, 0.5);
            check(&format!("bias M={m} C={c} V={v} Vc={vc}"), &got, &k, 0.5);
        }
    });
}

/// Every operand bound in row pieces: contexts that plan for a small binding.
#[test]
fn classifier_crossentropy_chunks_split_bindings_match_reference() {
    let (m, c, v, vc) = (130, 64, 509, 200);
    // 64 rows of the widest operand per binding (alignment allows it).
    let limit = (64 * vc * 4) as u64;
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit(limit);
        assert!(ctx.row_chunks(m, vc).len() >= 3);
        let mut rng = Rng::new(100);
        let k = case(&mut rng, m, c, v);
        let got = run(&ctx, &k, vc, 1.0);
        check("split bindings", &got, &k, 1.0);
    }
}

#[test]
fn classifier_chunk_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let (m, c, v) = (4, 8, 20);
        let x = Tensor::zeros(ctx, "x", &[m, c], DType::F32).unwrap();
        let wte = Tensor::zeros(ctx, "wte", &[v, c], DType::F32).unwrap();
        let logits = Tensor::zeros(ctx, "logits chunk", &[m, 5], DType::F32).unwrap();
        let w = Tensor::zeros(ctx, "wte chunk", &[5, c], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        let e = classifier_chunk_forward(&mut s, ctx, &logits, &w, &x, &wte, None, m, c, v, 18..23);
        assert!(e.unwrap_err().to_string().contains("18..23"));
        let e = classifier_chunk_forward(&mut s, ctx, &logits, &w, &x, &wte, None, m, c, v, 0..6);
        assert!(e.unwrap_err().to_string().contains("logits chunk"));
        // A bias scratch narrower than the chunk, and a bias that is not (V).
        let bias = Tensor::zeros(ctx, "bias", &[v], DType::F32).unwrap();
        let small = Tensor::zeros(ctx, "bias chunk", &[4], DType::F32).unwrap();
        let b = Some((&bias, &small));
        let e = classifier_chunk_forward(&mut s, ctx, &logits, &w, &x, &wte, b, m, c, v, 0..5);
        assert!(e.unwrap_err().to_string().contains("bias chunk"));
        let short = Tensor::zeros(ctx, "short bias", &[v - 1], DType::F32).unwrap();
        let b = Some((&short, &w));
        let e = classifier_chunk_forward(&mut s, ctx, &logits, &w, &x, &wte, b, m, c, v, 0..5);
        assert!(e.unwrap_err().to_string().contains("short bias"));
        assert!(ClassifierChunks::new(ctx, "", m, c, 0).is_err());
        // A bias with chunks made without its scratch.
        let chunks = ClassifierChunks::new(ctx, "", m, c, 5).unwrap();
        let targets = Tensor::zeros(ctx, "targets", &[m], DType::I32).unwrap();
        let e = classifier_crossentropy_forward(
            &mut s,
            ctx,
            &chunks,
            &logits,
            &x,
            &wte,
            Some(&bias),
            &targets,
            m,
            c,
            v,
        );
        assert!(e.unwrap_err().to_string().contains("with_bias"));
        assert_eq!(s.launches(), 0);
    });
}

#[test]
fn vocab_chunks_cover_the_vocabulary_once() {
    assert_eq!(vocab_chunks(101, 17).len(), 6);
    assert_eq!(vocab_chunks(101, 17).last(), Some(&(85..101)));
    assert_eq!(vocab_chunks(100, 25), vec![0..25, 25..50, 50..75, 75..100]);
    assert_eq!(vocab_chunks(5, 8), vec![0..5]);
}

/// Auto keeps whole logits up to the threshold, then chunks in multiples of 64 columns
/// of at most CLASSIFIER_CHUNK_BYTES; Columns and Whole are taken as given.
#[test]
fn classifier_chunk_choice() {
    let v = 50257;
    let whole_rows = (CLASSIFIER_CHUNK_THRESHOLD / (v as u64 * 4)) as usize;
    assert_eq!(ClassifierChunk::Auto.columns(whole_rows, v).unwrap(), None);
    let vc = ClassifierChunk::Auto
        .columns(whole_rows + 1, v)
        .unwrap()
        .unwrap();
    assert!(
        vc.is_multiple_of(64) && (whole_rows + 1) as u64 * vc as u64 * 4 <= CLASSIFIER_CHUNK_BYTES
    );
    // GPT-2 at B·T = 4·1024: 823 MB of logits become chunks of 2048 columns (32 MiB).
    assert_eq!(ClassifierChunk::Auto.columns(4096, v).unwrap(), Some(2048));
    // Rows so many that 64 columns exceed the target: still 64.
    assert_eq!(ClassifierChunk::Auto.columns(1 << 20, v).unwrap(), Some(64));
    // A small vocabulary stays whole however many rows.
    assert_eq!(ClassifierChunk::Auto.columns(1 << 20, 60).unwrap(), None);
    assert_eq!(ClassifierChunk::Whole.columns(1 << 20, v).unwrap(), None);
    assert_eq!(
        ClassifierChunk::Columns(17).columns(51, 101).unwrap(),
        Some(17)
    );
    assert_eq!(
        ClassifierChunk::Columns(101).columns(51, 101).unwrap(),
        None
    );
    assert!(ClassifierChunk::Columns(0).columns(51, 101).is_err());
}
