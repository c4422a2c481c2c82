//! decode_embed, decode_append, decode_attention, decode_gather and decode_logits
//! against their f64 references: T = 1 steps at the first, a middle and the last cache position, prefill
//! passes with padded rows (n < T), batches whose rows sit at different positions, head
//! sizes 12, 16, 64 and 128, wte split over several bindings, determinism, and the
//! errors a caller can cause.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::decode::{
    decode_append, decode_attention, decode_embed, decode_gather, decode_logits, DecodeRow,
};
use wgformer::reference::decode as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, same_bits, test_contexts, to_f64};

/// One pass: (B, T, C, NH, maxT) and each row's (pos, n).
struct Case {
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
    max_t: usize,
    rows: Vec<(usize, usize)>,
}

fn cases() -> Vec<Case> {
    let case = |b, t, c, nh, max_t, rows: &[(usize, usize)]| Case {
        b,
        t,
        c,
        nh,
        max_t,
        rows: rows.to_vec(),
    };
    vec![
        // decode steps (T = 1): first position, middle, last; HS = 12 (not a multiple of 4)
        case(1, 1, 48, 4, 32, &[(0, 1)]),
        case(2, 1, 48, 4, 32, &[(17, 1), (31, 1)]),
        case(1, 1, 768, 12, 1024, &[(1000, 1)]),
        case(3, 1, 80, 5, 64, &[(0, 1), (63, 1), (40, 1)]),
        // prefill passes: whole prompts, padded rows, rows at different positions
        case(1, 7, 48, 4, 32, &[(0, 7)]),
        case(2, 8, 48, 3, 32, &[(0, 5), (3, 8)]),
        case(3, 7, 64, 4, 64, &[(0, 1), (20, 7), (57, 3)]),
        case(1, 64, 256, 2, 128, &[(10, 61)]),
        case(2, 64, 768, 12, 64, &[(0, 64), (0, 33)]),
    ]
}

struct Data {
    tokens: Vec<i32>,
    wte: Vec<f32>,
    wpe: Vec<f32>,
    qkv: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    x: Vec<f32>,
}

const V: usize = 509;

fn data(rng: &mut Rng, cs: &Case) -> Data {
    let (b, t, c, max_t) = (cs.b, cs.t, cs.c, cs.max_t);
    Data {
        tokens: (0..b * t).map(|_| rng.below(V as u64) as i32).collect(),
        wte: rng.vec_normal(V * c, 1.0),
        wpe: rng.vec_normal(max_t * c, 1.0),
        qkv: rng.vec_normal(b * t * 3 * c, 1.0),
        // what earlier passes left in the caches
        k: rng.vec_normal(b * max_t * c, 1.0),
        v: rng.vec_normal(b * max_t * c, 1.0),
        x: rng.vec_normal(b * t * c, 1.0),
    }
}

struct Outputs {
    embed: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gather: Vec<f32>,
    logits: Vec<f32>,
}

fn run_gpu(ctx: &GpuContext, cs: &Case, d: &Data) -> Outputs {
    let (b, t, c, nh, max_t) = (cs.b, cs.t, cs.c, cs.nh, cs.max_t);
    let tokens = Tensor::from_i32(ctx, "tokens", &[b, t], &d.tokens).unwrap();
    let wte = Tensor::from_f32(ctx, "wte", &[V, c], &d.wte).unwrap();
    let wpe = Tensor::from_f32(ctx, "wpe", &[max_t, c], &d.wpe).unwrap();
    let qkv = Tensor::from_f32(ctx, "qkv", &[b, t, 3 * c], &d.qkv).unwrap();
    let kc = Tensor::from_f32(ctx, "k cache", &[b, nh, max_t, c / nh], &d.k).unwrap();
    let vc = Tensor::from_f32(ctx, "v cache", &[b, nh, max_t, c / nh], &d.v).unwrap();
    let x = Tensor::from_f32(ctx, "x", &[b, t, c], &d.x).unwrap();
    let embed = Tensor::zeros(ctx, "embed", &[b, t, c], DType::F32).unwrap();
    let att = Tensor::zeros(ctx, "att", &[b, t, c], DType::F32).unwrap();
    let gather = Tensor::zeros(ctx, "gather", &[b, c], DType::F32).unwrap();
    let logits = Tensor::zeros(ctx, "logits", &[b, V], DType::F32).unwrap();
    let state = DecodeRow::tensor(ctx, "state", b).unwrap();
    let rows: Vec<DecodeRow> = cs
        .rows
        .iter()
        .map(|&(pos, n)| DecodeRow {
            pos: pos as u32,
            n: n as u32,
        })
        .collect();
    DecodeRow::write(ctx, &state, &rows).unwrap();
    let mut s = Schedule::new("decode");
    decode_embed(
        &mut s, ctx, &embed, &tokens, &wte, &wpe, &state, b, t, c, V, max_t,
    )
    .unwrap();
    decode_append(&mut s, ctx, &kc, &vc, &qkv, &state, b, t, c, nh, max_t).unwrap();
    decode_attention(
        &mut s, ctx, &att, &qkv, &kc, &vc, &state, b, t, c, nh, max_t,
    )
    .unwrap();
    decode_gather(&mut s, ctx, &gather, &x, &state, b, t, c).unwrap();
    decode_logits(&mut s, ctx, &logits, &gather, &wte, b, c, V).unwrap();
    s.run(ctx);
    let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
    Outputs {
        embed: read(&embed),
        k: read(&kc),
        v: read(&vc),
        att: read(&att),
        gather: read(&gather),
        logits: read(&logits),
    }
}

fn check(name: &str, got: &Outputs, cs: &Case, d: &Data) {
    let (b, t, c, nh, max_t) = (cs.b, cs.t, cs.c, cs.nh, cs.max_t);
    let pos: Vec<usize> = cs.rows.iter().map(|r| r.0).collect();
    let n: Vec<usize> = cs.rows.iter().map(|r| r.1).collect();
    let mut embed = vec![0f64; b * t * c];
    let (wte, wpe) = (to_f64(&d.wte), to_f64(&d.wpe));
    cpu::decode_embed(&mut embed, &d.tokens, &wte, &wpe, &pos, &n, b, t, c, V);
    assert_close64(&format!("{name} embed"), &got.embed, &embed, 1e-5, 1e-4);
    let qkv = to_f64(&d.qkv);
    let (mut k, mut v) = (to_f64(&d.k), to_f64(&d.v));
    cpu::decode_append(&mut k, &mut v, &qkv, &pos, &n, b, t, c, nh, max_t);
    // A copy: exact.
    assert_close64(&format!("{name} k cache"), &got.k, &k, 0.0, 0.0);
    assert_close64(&format!("{name} v cache"), &got.v, &v, 0.0, 0.0);
    let mut att = vec![0f64; b * t * c];
    cpu::decode_attention(&mut att, &qkv, &k, &v, &pos, &n, b, t, c, nh, max_t);
    let cl = assert_close64(&format!("{name} attention"), &got.att, &att, 1e-4, 1e-3);
    let mut gather = vec![0f64; b * c];
    cpu::decode_gather(&mut gather, &to_f64(&d.x), &n, b, t, c);
    assert_close64(&format!("{name} gather"), &got.gather, &gather, 0.0, 0.0);
    let mut logits = vec![0f64; b * V];
    cpu::decode_logits(&mut logits, &gather, &wte, b, c, V);
    assert_close64(&format!("{name} logits"), &got.logits, &logits, 1e-4, 1e-3);
    eprintln!("{name}: attention max |Δ| {:e}", cl.max_abs);
}

#[test]
fn decode_kernels_match_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(6);
        for cs in cases() {
            let d = data(&mut rng, &cs);
            let got = run_gpu(ctx, &cs, &d);
            let name = format!(
                "B={} T={} C={} NH={} maxT={} rows {:?}",
                cs.b, cs.t, cs.c, cs.nh, cs.max_t, cs.rows
            );
            check(&name, &got, &cs, &d);
        }
    });
}

/// wte bound in several row chunks, as GPT-2's 147 MiB one is.
#[test]
fn decode_embed_and_logits_with_wte_in_chunks() {
    let mut rng = Rng::new(9);
    let cs = Case {
        b: 2,
        t: 7,
        c: 48,
        nh: 4,
        max_t: 32,
        rows: vec![(0, 7), (9, 4)],
    };
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit((100 * cs.c * 4) as u64);
        let chunks = ctx.row_chunks(V, cs.c).len();
        assert!(chunks >= 5, "expected several chunks, got {chunks}");
        let d = data(&mut rng, &cs);
        let got = run_gpu(&ctx, &cs, &d);
        check(&format!("wte in {chunks} chunks"), &got, &cs, &d);
    }
}

#[test]
fn decode_is_deterministic() {
    on_each_adapter(|ctx| {
        let cs = Case {
            b: 2,
            t: 64,
            c: 768,
            nh: 12,
            max_t: 128,
            rows: vec![(0, 64), (50, 40)],
        };
        let d = data(&mut Rng::new(2), &cs);
        let first = run_gpu(ctx, &cs, &d);
        let again = run_gpu(ctx, &cs, &d);
        assert!(same_bits(&first.att, &again.att), "attention differs");
        assert!(same_bits(&first.embed, &again.embed), "embed differs");
    });
}

#[test]
fn decode_launchers_reject_bad_arguments() {
    on_each_adapter(|ctx| {
        let (b, t, c, nh, max_t) = (1, 4, 48, 4, 8);
        let z = |label: &str, shape: &[usize], dt| Tensor::zeros(ctx, label, shape, dt).unwrap();
        let out = z("out", &[b, t, c], DType::F32);
        let qkv = z("qkv", &[b, t, 3 * c], DType::F32);
        let kc = z("k cache", &[b, nh, max_t, c / nh], DType::F32);
        let short = z("short cache", &[b, nh, max_t - 1, c / nh], DType::F32);
        let state = DecodeRow::tensor(ctx, "state", b).unwrap();
        let f32_state = z("f32 state", &[b, 2], DType::F32);
        let mut s = Schedule::new("bad");
        let e = decode_attention(
            &mut s, ctx, &out, &qkv, &short, &kc, &state, b, t, c, nh, max_t,
        );
        assert!(e.unwrap_err().to_string().contains("short cache"));
        let e = decode_attention(
            &mut s, ctx, &out, &qkv, &kc, &kc, &f32_state, b, t, c, nh, max_t,
        );
        assert!(e.unwrap_err().to_string().contains("f32 state"));
        let e = decode_append(&mut s, ctx, &kc, &kc, &qkv, &state, b, t, c, 5, max_t);
        assert!(e.unwrap_err().to_string().contains("heads"));
        let e = decode_append(&mut s, ctx, &kc, &kc, &qkv, &state, b, t, c, nh, 3);
        assert!(e.unwrap_err().to_string().contains("cache of 3"));
        let big = z("out 256", &[1, 1, 256], DType::F32);
        let bigqkv = z("qkv 256", &[1, 1, 768], DType::F32);
        let bigc = z("cache 256", &[1, 1, max_t, 256], DType::F32);
        let e = decode_attention(
            &mut s, ctx, &big, &bigqkv, &bigc, &bigc, &state, 1, 1, 256, 1, max_t,
        );
        assert!(e.unwrap_err().to_string().contains("head size 256"));
        assert_eq!(s.launches(), 0);
    });
}
