//! encoder_forward and encoder_backward against their CPU references: awkward sizes
//! (T = 1; C = 48, 80, 768; V = 101, 509), many repeated tokens (summed in a fixed order:
//! the same bits every run), the row-chunked path at small V under a lowered binding
//! limit, GPT-2's real 50257×768 table split across two bindings, and tokens outside
//! the vocabulary; at scale 1 they give exactly the bits of f32 sums in position order.
//! embed_forward and embed_backward (scale √C, odd C, with and without a position
//! gradient, also in row chunks) against theirs, and sinusoidal_positions against hand
//! values. The backward references are checked by finite differences.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::encoder::{
    embed_backward, embed_forward, encoder_backward, encoder_forward, sinusoidal_positions,
};
use wgformer::reference::encoder as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_gradient, on_each_adapter, same_bits, test_contexts, to_f64,
};

/// Inputs of one test case, in f32 as uploaded.
#[derive(Clone)]
struct Case {
    b: usize,
    t: usize,
    c: usize,
    v: usize,
    max_t: usize,
    tokens: Vec<i32>,
    wte: Vec<f32>,
    wpe: Vec<f32>,
    dout: Vec<f32>,
    /// Starting values of dwte and dwpe: the backward adds into them.
    dwte: Vec<f32>,
    dwpe: Vec<f32>,
}

impl Case {
    /// Tokens drawn from the first `distinct` ids of the vocabulary (all of it if V).
    fn new(rng: &mut Rng, (b, t, c, v): (usize, usize, usize, usize), distinct: usize) -> Self {
        let max_t = t + 3;
        Case {
            b,
            t,
            c,
            v,
            max_t,
            tokens: (0..b * t)
                .map(|_| rng.below(distinct as u64) as i32)
                .collect(),
            wte: rng.vec_uniform(v * c, -1.0, 1.0),
            wpe: rng.vec_uniform(max_t * c, -1.0, 1.0),
            dout: rng.vec_normal(b * t * c, 1.0),
            dwte: rng.vec_uniform(v * c, -1.0, 1.0),
            dwpe: rng.vec_uniform(max_t * c, -1.0, 1.0),
        }
    }

    fn name(&self) -> String {
        let (b, t, c, v) = (self.b, self.t, self.c, self.v);
        format!("B={b} T={t} C={c} V={v}")
    }
}

/// GPU results: (out, dwte, dwpe). `out` starts as NaN, so an element no launch writes
/// shows up.
fn run(ctx: &GpuContext, k: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, t, c, v) = (k.b, k.t, k.c, k.v);
    let f = |name: &str, shape: &[usize], data: &[f32]| {
        Tensor::from_f32(ctx, name, shape, data).unwrap()
    };
    let tokens = Tensor::from_i32(ctx, "tokens", &[b, t], &k.tokens).unwrap();
    let wte = f("wte", &[v, c], &k.wte);
    let wpe = f("wpe", &[k.max_t, c], &k.wpe);
    let dout = f("dout", &[b, t, c], &k.dout);
    let out = f("out", &[b, t, c], &vec![f32::NAN; b * t * c]);
    let dwte = f("dwte", &[v, c], &k.dwte);
    let dwpe = f("dwpe", &[k.max_t, c], &k.dwpe);
    let mut s = Schedule::new("encoder");
    encoder_forward(&mut s, ctx, &out, &tokens, &wte, &wpe, b, t, c, v).unwrap();
    encoder_backward(&mut s, ctx, &dwte, &dwpe, &dout, &tokens, b, t, c, v).unwrap();
    s.run(ctx);
    let read = |x: &Tensor| ctx.block_on(x.read_f32(ctx)).unwrap();
    (read(&out), read(&dwte), read(&dwpe))
}

/// Reference results, as [`run`]'s.
fn reference(k: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b, t, c, v) = (k.b, k.t, k.c, k.v);
    let mut out = vec![0f64; b * t * c];
    cpu::encoder_forward(
        &mut out,
        &k.tokens,
        &to_f64(&k.wte),
        &to_f64(&k.wpe),
        b,
        t,
        c,
        v,
    );
    let (mut dwte, mut dwpe) = (to_f64(&k.dwte), to_f64(&k.dwpe));
    cpu::encoder_backward(
        &mut dwte,
        &mut dwpe,
        &to_f64(&k.dout),
        &k.tokens,
        b,
        t,
        c,
        v,
    );
    (out, dwte, dwpe)
}

/// Compare GPU results with the reference: out elementwise (atol 1e-5), dwte and dwpe
/// as sums (1e-4 / 1e-3).
fn check(name: &str, got: &(Vec<f32>, Vec<f32>, Vec<f32>), k: &Case) {
    let want = reference(k);
    let o = assert_close64(&format!("encoder out {name}"), &got.0, &want.0, 1e-5, 1e-4);
    let w = assert_close64(&format!("encoder dwte {name}"), &got.1, &want.1, 1e-4, 1e-3);
    let p = assert_close64(&format!("encoder dwpe {name}"), &got.2, &want.2, 1e-4, 1e-3);
    eprintln!(
        "encoder {name}: max |Δ| out {:.1e}, dwte {:.1e}, dwpe {:.1e}",
        o.max_abs, w.max_abs, p.max_abs
    );
}

/// (B, T, C, V)
const SIZES: [(usize, usize, usize, usize); 5] = [
    (1, 1, 48, 101),
    (3, 1, 80, 509),
    (2, 7, 80, 509),
    (3, 64, 48, 101),
    (2, 64, 768, 509),
];

#[test]
fn encoder_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(31);
        for size in SIZES {
            let k = Case::new(&mut rng, size, size.3);
            check(&k.name(), &run(ctx, &k), &k);
        }
    });
}

#[test]
fn encoder_backward_sums_repeated_tokens_deterministically() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(32);
        // 192 positions over 3 tokens, then all 192 on one token.
        for distinct in [3, 1] {
            let k = Case::new(&mut rng, (3, 64, 80, 101), distinct);
            let first = run(ctx, &k);
            check(&format!("{} over {distinct} tokens", k.name()), &first, &k);
            for _ in 0..2 {
                let again = run(ctx, &k);
                assert!(same_bits(&first.0, &again.0), "encoder out bits differ");
                assert!(same_bits(&first.1, &again.1), "encoder dwte bits differ");
                assert!(same_bits(&first.2, &again.2), "encoder dwpe bits differ");
            }
        }
    });
}

#[test]
fn encoder_row_chunks_match_one_binding() {
    // A 16 KiB binding limit splits wte into 7 to 21 chunks at these sizes; the chunked
    // launches must give the bits of the single-binding ones.
    const LIMIT: u64 = 16 << 10;
    for ctx in test_contexts(&Needs::default()) {
        let mut rng = Rng::new(33);
        let mut cases: Vec<Case> = [(2, 7, 48, 509), (3, 64, 80, 509), (1, 1, 768, 101)]
            .into_iter()
            .map(|size| Case::new(&mut rng, size, size.3))
            .collect();
        // Long runs of repeated tokens whose chains cross many chunks' launches.
        cases.push(Case::new(&mut rng, (3, 64, 48, 509), 7));
        let whole: Vec<_> = cases.iter().map(|k| run(&ctx, k)).collect();
        let ctx = ctx.with_binding_limit(LIMIT);
        for (k, whole) in cases.iter().zip(&whole) {
            let chunks = ctx.row_chunks(k.v, k.c).len();
            assert!(chunks >= 5, "{}: only {chunks} chunks", k.name());
            let name = format!("{} in {chunks} chunks", k.name());
            let got = run(&ctx, k);
            check(&name, &got, k);
            assert!(same_bits(&got.0, &whole.0), "{name}: out differs");
            assert!(same_bits(&got.1, &whole.1), "{name}: dwte differs");
            assert!(same_bits(&got.2, &whole.2), "{name}: dwpe differs");
        }
    }
}

#[test]
fn encoder_splits_gpt2_vocabulary_across_bindings() {
    // wte of GPT-2 124M is 50257×768 f32 = 147 MiB, more than one 128 MiB binding.
    let (b, t, c, v) = (2, 3, 768, 50257);
    on_each_adapter(|ctx| {
        let chunks = ctx.row_chunks(v, c);
        assert!(chunks.len() >= 2, "wte fits one binding: {chunks:?}");
        let edge = chunks[1].start as i32;
        let mut rng = Rng::new(34);
        let wte = rng.vec_uniform(v * c, -1.0, 1.0);
        let k = Case {
            b,
            t,
            c,
            v,
            max_t: 1024,
            // Both sides of the chunk edge, the ends of the table, a token in each chunk
            // repeated across the batch.
            tokens: vec![0, edge - 1, edge, edge, v as i32 - 1, 0],
            wpe: rng.vec_uniform(1024 * c, -1.0, 1.0),
            dout: rng.vec_normal(b * t * c, 1.0),
            dwpe: rng.vec_uniform(1024 * c, -1.0, 1.0),
            // dwte starts as a copy of wte: rows no token names must come back unchanged.
            dwte: wte.clone(),
            wte,
        };
        let (out, dwte, dwpe) = run(ctx, &k);

        // The reference on the touched rows only, renumbered 0..n.
        let mut rows: Vec<i32> = k.tokens.clone();
        rows.sort();
        rows.dedup();
        let compact = Case {
            v: rows.len(),
            tokens: k
                .tokens
                .iter()
                .map(|tok| rows.binary_search(tok).unwrap() as i32)
                .collect(),
            wte: rows
                .iter()
                .flat_map(|&r| &k.wte[r as usize * c..(r as usize + 1) * c])
                .copied()
                .collect(),
            dwte: rows
                .iter()
                .flat_map(|&r| &k.dwte[r as usize * c..(r as usize + 1) * c])
                .copied()
                .collect(),
            ..k.clone()
        };
        let touched: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &dwte[r as usize * c..(r as usize + 1) * c])
            .copied()
            .collect();
        let name = format!("{} in {} chunks", k.name(), chunks.len());
        check(&name, &(out, touched, dwpe), &compact);
        for r in 0..v {
            if rows.binary_search(&(r as i32)).is_err() {
                let row = r * c..(r + 1) * c;
                assert!(
                    same_bits(&dwte[row.clone()], &k.dwte[row]),
                    "{name}: dwte row {r}, named by no token, changed"
                );
            }
        }
    });
}

#[test]
fn encoder_tokens_outside_the_vocabulary_read_nothing() {
    // The host rejects such tokens; the kernels must still stay in bounds. The forward
    // gives wpe[t] alone and the backward adds dout to dwpe only.
    let (b, t, c, v) = (2, 3, 48, 101);
    let bad = [-1, v as i32, i32::MIN, i32::MAX];
    let check_bad = |ctx: &GpuContext| {
        let mut rng = Rng::new(35);
        let mut k = Case::new(&mut rng, (b, t, c, v), v);
        k.tokens = vec![bad[0], 5, bad[1], bad[2], 5, bad[3]];
        let (out, dwte, dwpe) = run(ctx, &k);
        for (bt, &tok) in k.tokens.iter().enumerate() {
            let pos = &k.wpe[(bt % t) * c..(bt % t + 1) * c];
            let row = &out[bt * c..(bt + 1) * c];
            if bad.contains(&tok) {
                assert!(same_bits(row, pos), "out for token {tok} is not wpe[t]");
            } else {
                let want: Vec<f64> = (0..c)
                    .map(|i| k.wte[tok as usize * c + i] as f64 + pos[i] as f64)
                    .collect();
                assert_close64("out with bad tokens", row, &want, 1e-5, 1e-4);
            }
        }
        // Only the two positions of token 5 add into dwte.
        let mut good = k.clone();
        good.tokens = vec![0, 5, 0, 0, 5, 0];
        good.dout = k.dout.clone();
        for bt in [0, 2, 3, 5] {
            good.dout[bt * c..(bt + 1) * c].fill(0.0);
        }
        let (_, want_dwte, _) = reference(&good);
        assert_close64("dwte with bad tokens", &dwte, &want_dwte, 1e-4, 1e-3);
        let others = |x: &[f32]| [&x[..5 * c], &x[6 * c..]].concat();
        assert!(
            same_bits(&others(&dwte), &others(&k.dwte)),
            "dwte rows no valid token names changed"
        );
        let (_, _, want_dwpe) = reference(&Case {
            tokens: vec![0; b * t],
            ..k.clone()
        });
        assert_close64("dwpe with bad tokens", &dwpe, &want_dwpe, 1e-4, 1e-3);
    };
    for ctx in test_contexts(&Needs::default()) {
        check_bad(&ctx);
        // Again with wte in chunks: only the launch of the first chunk writes their out.
        check_bad(&ctx.with_binding_limit(4 << 10));
    }
}

#[test]
fn encoder_backward_reference_is_the_gradient() {
    let (b, t, c, v, max_t) = (2, 3, 4, 5, 4);
    let tokens = vec![1, 3, 1, 1, 0, 3];
    let mut rng = Rng::new(36);
    let wte = to_f64(&rng.vec_normal(v * c, 1.0));
    let wpe = to_f64(&rng.vec_normal(max_t * c, 1.0));
    let dout = to_f64(&rng.vec_normal(b * t * c, 1.0));
    let loss = |wte: &[f64], wpe: &[f64]| {
        let mut out = vec![0f64; b * t * c];
        cpu::encoder_forward(&mut out, &tokens, wte, wpe, b, t, c, v);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let (mut dwte, mut dwpe) = (vec![0f64; v * c], vec![0f64; max_t * c]);
    cpu::encoder_backward(&mut dwte, &mut dwpe, &dout, &tokens, b, t, c, v);
    assert_gradient("encoder dwte", &wte, &dwte, |x| loss(x, &wpe), 100);
    assert_gradient("encoder dwpe", &wpe, &dwpe, |x| loss(&wte, x), 100);
}

#[test]
fn encoder_rejects_wrong_tensors() {
    on_each_adapter(|ctx| {
        let (b, t, c, v) = (2, 3, 48, 101);
        let z = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape, DType::F32).unwrap();
        let out = z("out", &[b, t, c]);
        let wte = z("wte", &[v, c]);
        let wpe = z("wpe", &[t + 1, c]);
        let short_wpe = z("short_wpe", &[t - 1, c]);
        let tokens = Tensor::zeros(ctx, "tokens", &[b, t], DType::I32).unwrap();
        let f32_tokens = z("f32_tokens", &[b, t]);
        let mut s = Schedule::new("encoder");
        let e =
            encoder_forward(&mut s, ctx, &out, &f32_tokens, &wte, &wpe, b, t, c, v).unwrap_err();
        assert!(e.to_string().contains("f32_tokens"), "{e}");
        let e =
            encoder_forward(&mut s, ctx, &out, &tokens, &wte, &short_wpe, b, t, c, v).unwrap_err();
        assert!(e.to_string().contains("short_wpe"), "{e}");
        let e =
            encoder_backward(&mut s, ctx, &wte, &wpe, &out, &tokens, b, t, c, v + 1).unwrap_err();
        assert!(e.to_string().contains("wte"), "{e}");
    });
}

#[test]
fn encoder_at_scale_one_gives_the_bits_of_position_ordered_f32_sums() {
    // GPT-2's results must not move with the scale: out = wte + wpe is one f32 add, dwte
    // adds each position's dout into the old value in position order, dwpe adds over b in
    // order. Vulkan and WebGPU round f32 adds correctly, so those bits are fixed.
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(37);
        let k = Case::new(&mut rng, (3, 64, 80, 101), 5);
        let (b, t, c) = (k.b, k.t, k.c);
        let (out, dwte, dwpe) = run(ctx, &k);
        let (mut want_out, mut want_dwte, mut want_dwpe) =
            (vec![0f32; b * t * c], k.dwte.clone(), k.dwpe.clone());
        for bt in 0..b * t {
            let (r, pos) = (k.tokens[bt] as usize, bt % t);
            for i in 0..c {
                want_out[bt * c + i] = k.wte[r * c + i] + k.wpe[pos * c + i];
                want_dwte[r * c + i] += k.dout[bt * c + i];
            }
        }
        for bt in 0..b * t {
            for i in 0..c {
                want_dwpe[(bt % t) * c + i] += k.dout[bt * c + i];
            }
        }
        assert!(same_bits(&out, &want_out), "encoder out bits moved");
        assert!(same_bits(&dwte, &want_dwte), "encoder dwte bits moved");
        assert!(same_bits(&dwpe, &want_dwpe), "encoder dwpe bits moved");
    });
}

/// GPU results of embed_forward and embed_backward: (out, demb, dpe), dpe `None` when
/// `with_dpe` is false (no position gradient: the table is fixed).
fn run_embed(
    ctx: &GpuContext,
    k: &Case,
    scale: f32,
    with_dpe: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (b, t, c, v) = (k.b, k.t, k.c, k.v);
    let f = |name: &str, shape: &[usize], data: &[f32]| {
        Tensor::from_f32(ctx, name, shape, data).unwrap()
    };
    let tokens = Tensor::from_i32(ctx, "tokens", &[b, t], &k.tokens).unwrap();
    let emb = f("emb", &[v, c], &k.wte);
    let pe = f("pe", &[k.max_t, c], &k.wpe);
    let dout = f("dout", &[b, t, c], &k.dout);
    let out = f("out", &[b, t, c], &vec![f32::NAN; b * t * c]);
    let demb = f("demb", &[v, c], &k.dwte);
    let dpe = f("dpe", &[k.max_t, c], &k.dwpe);
    let dpe_opt = with_dpe.then_some(&dpe);
    let mut s = Schedule::new("embed");
    embed_forward(&mut s, ctx, &out, &tokens, &emb, &pe, b, t, c, v, scale).unwrap();
    embed_backward(
        &mut s, ctx, &demb, dpe_opt, &dout, &tokens, b, t, c, v, scale,
    )
    .unwrap();
    s.run(ctx);
    let read = |x: &Tensor| ctx.block_on(x.read_f32(ctx)).unwrap();
    let got_dpe = read(&dpe);
    if !with_dpe {
        assert!(
            same_bits(&got_dpe, &k.dwpe),
            "dpe changed with no dpe given"
        );
    }
    (read(&out), read(&demb), with_dpe.then_some(got_dpe))
}

/// Compare [`run_embed`]'s results with the references: out elementwise (atol 1e-5),
/// demb and dpe as sums (1e-4 / 1e-3).
fn check_embed(name: &str, got: &(Vec<f32>, Vec<f32>, Option<Vec<f32>>), k: &Case, scale: f32) {
    let (b, t, c, v) = (k.b, k.t, k.c, k.v);
    let scale = scale as f64;
    let mut out = vec![0f64; b * t * c];
    let (emb, pe) = (to_f64(&k.wte), to_f64(&k.wpe));
    cpu::embed_forward(&mut out, &k.tokens, &emb, &pe, b, t, c, v, scale);
    let (mut demb, mut dpe) = (to_f64(&k.dwte), to_f64(&k.dwpe));
    let dpe_opt = got.2.is_some().then_some(&mut dpe[..]);
    let dout = to_f64(&k.dout);
    cpu::embed_backward(&mut demb, dpe_opt, &dout, &k.tokens, b, t, c, v, scale);
    let o = assert_close64(&format!("embed out {name}"), &got.0, &out, 1e-5, 1e-4);
    let e = assert_close64(&format!("embed demb {name}"), &got.1, &demb, 1e-4, 1e-3);
    let p = got.2.as_ref().map_or("none".to_string(), |got_dpe| {
        let p = assert_close64(&format!("embed dpe {name}"), got_dpe, &dpe, 1e-4, 1e-3);
        format!("{:.1e}", p.max_abs)
    });
    eprintln!(
        "embed {name}: max |Δ| out {:.1e}, demb {:.1e}, dpe {p}",
        o.max_abs, e.max_abs
    );
}

/// (B, T, C, V) with odd C and V for the scaled embedding.
const EMBED_SIZES: [(usize, usize, usize, usize); 4] = [
    (1, 1, 33, 61),
    (3, 1, 33, 61),
    (2, 11, 33, 61),
    (3, 11, 80, 509),
];

#[test]
fn embed_scaled_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(38);
        for size in EMBED_SIZES {
            // Few distinct tokens: repeated rows are summed before the scale.
            let k = Case::new(&mut rng, size, 7);
            let scale = (k.c as f32).sqrt();
            for with_dpe in [true, false] {
                let name = format!("{} scale {scale} dpe {with_dpe}", k.name());
                let first = run_embed(ctx, &k, scale, with_dpe);
                check_embed(&name, &first, &k, scale);
                let again = run_embed(ctx, &k, scale, with_dpe);
                assert!(same_bits(&first.0, &again.0), "{name}: out bits differ");
                assert!(same_bits(&first.1, &again.1), "{name}: demb bits differ");
            }
        }
    });
}

#[test]
fn embed_row_chunks_match_one_binding() {
    // As encoder_row_chunks_match_one_binding, at scale √C and without dpe too. With
    // C = 33 a row is 132 bytes, so an aligned chunk (256 bytes) holds a multiple of 64
    // rows: a 9 KiB limit gives 8 chunks of V = 509.
    const LIMIT: u64 = 9 << 10;
    for ctx in test_contexts(&Needs::default()) {
        let mut rng = Rng::new(39);
        let cases: Vec<Case> = [(2, 11, 33, 509), (3, 11, 48, 509)]
            .into_iter()
            .map(|size| Case::new(&mut rng, size, 9))
            .collect();
        // Single-binding results first: with_binding_limit takes the context.
        let mut whole = Vec::new();
        for k in &cases {
            for with_dpe in [true, false] {
                whole.push(run_embed(&ctx, k, (k.c as f32).sqrt(), with_dpe));
            }
        }
        let small = ctx.with_binding_limit(LIMIT);
        let mut whole = whole.into_iter();
        for k in &cases {
            let scale = (k.c as f32).sqrt();
            let chunks = small.row_chunks(k.v, k.c).len();
            assert!(chunks >= 5, "{}: only {chunks} chunks", k.name());
            for with_dpe in [true, false] {
                let whole = whole.next().unwrap();
                let name = format!(
                    "{} scale {scale} dpe {with_dpe} in {chunks} chunks",
                    k.name()
                );
                let got = run_embed(&small, k, scale, with_dpe);
                check_embed(&name, &got, k, scale);
                assert!(same_bits(&got.0, &whole.0), "{name}: out differs");
                assert!(same_bits(&got.1, &whole.1), "{name}: demb differs");
                assert_eq!(got.2.is_some(), whole.2.is_some());
                if let (Some(g), Some(w)) = (&got.2, &whole.2) {
                    assert!(same_bits(g, w), "{name}: dpe differs");
                }
            }
        }
    }
}

#[test]
fn embed_backward_reference_is_the_gradient() {
    let (b, t, c, v, max_t) = (2, 3, 5, 4, 4);
    let scale = (c as f64).sqrt();
    let tokens = vec![1, 3, 1, 1, 0, 3];
    let mut rng = Rng::new(40);
    let emb = to_f64(&rng.vec_normal(v * c, 1.0));
    let pe = to_f64(&rng.vec_normal(max_t * c, 1.0));
    let dout = to_f64(&rng.vec_normal(b * t * c, 1.0));
    let loss = |emb: &[f64], pe: &[f64]| {
        let mut out = vec![0f64; b * t * c];
        cpu::embed_forward(&mut out, &tokens, emb, pe, b, t, c, v, scale);
        out.iter().zip(&dout).map(|(o, d)| o * d).sum::<f64>()
    };
    let (mut demb, mut dpe) = (vec![0f64; v * c], vec![0f64; max_t * c]);
    cpu::embed_backward(&mut demb, Some(&mut dpe), &dout, &tokens, b, t, c, v, scale);
    assert_gradient("embed demb", &emb, &demb, |x| loss(x, &pe), 100);
    assert_gradient("embed dpe", &pe, &dpe, |x| loss(&emb, x), 100);
    // Without dpe, demb is the same.
    let mut demb_alone = vec![0f64; v * c];
    cpu::embed_backward(&mut demb_alone, None, &dout, &tokens, b, t, c, v, scale);
    assert_eq!(demb_alone, demb);
}

#[test]
fn sinusoidal_positions_match_hand_values() {
    for c in [8, 33, 768] {
        let max_t = 5;
        let pe = sinusoidal_positions(max_t, c);
        assert_eq!(pe.len(), max_t * c);
        // Position 0: sin 0 = 0 in even columns, cos 0 = 1 in odd ones.
        let zero: Vec<f32> = (0..c).map(|j| (j % 2) as f32).collect();
        assert!(same_bits(&pe[..c], &zero), "C={c}: pe[0] = {:?}", &pe[..c]);
        let near = |got: f32, want: f64, at: &str| {
            assert!(
                (got as f64 - want).abs() <= 1e-7,
                "C={c}: pe{at} = {got}, expected {want}"
            );
        };
        near(pe[c], 1f64.sin(), "[1][0]");
        near(pe[c + 1], 1f64.cos(), "[1][1]");
        let w = 10000f64.powf(-2.0 / c as f64);
        near(pe[3 * c + 2], (3.0 * w).sin(), "[3][2]");
        near(pe[3 * c + 3], (3.0 * w).cos(), "[3][3]");
        // The last column: a sine when C is odd, a cosine when even.
        let j = (c - 1) & !1;
        let last = (4.0 * 10000f64.powf(-(j as f64) / c as f64)).sin();
        let last = if c % 2 == 1 {
            last
        } else {
            (4.0 * 10000f64.powf(-(j as f64) / c as f64)).cos()
        };
        near(pe[4 * c + c - 1], last, "[4][C-1]");
        assert!(pe.iter().all(|x| x.abs() <= 1.0));
    }
    // C = 1: the one column is sin(p).
    let pe = sinusoidal_positions(3, 1);
    assert_eq!(pe, vec![0.0, 1f64.sin() as f32, 2f64.sin() as f32]);
}

#[test]
fn embed_rejects_wrong_tensors() {
    on_each_adapter(|ctx| {
        let (b, t, c, v) = (2, 3, 33, 61);
        let z = |name: &str, shape: &[usize]| Tensor::zeros(ctx, name, shape, DType::F32).unwrap();
        let out = z("out", &[b, t, c]);
        let emb = z("emb", &[v, c]);
        let pe = z("pe", &[t, c]);
        let narrow_dpe = z("narrow_dpe", &[t, c - 1]);
        let tokens = Tensor::zeros(ctx, "tokens", &[b, t], DType::I32).unwrap();
        let mut s = Schedule::new("embed");
        let e =
            embed_forward(&mut s, ctx, &out, &tokens, &emb, &pe, b, t, c, v + 1, 2.0).unwrap_err();
        assert!(e.to_string().contains("emb"), "{e}");
        let dpe = Some(&narrow_dpe);
        let e = embed_backward(&mut s, ctx, &emb, dpe, &out, &tokens, b, t, c, v, 2.0).unwrap_err();
        assert!(e.to_string().contains("narrow_dpe"), "{e}");
        let e =
            embed_backward(&mut s, ctx, &emb, None, &emb, &tokens, b, t, c, v, 2.0).unwrap_err();
        assert!(e.to_string().contains("emb"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}
