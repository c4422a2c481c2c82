//! encoder_forward and encoder_backward against their CPU references: awkward sizes
//! (T = 1; C = 48, 80, 768; V = 101, 509), many repeated tokens (summed in a fixed order:
//! the same bits every run), the row-chunked path at small V under a lowered binding
//! limit, GPT-2's real 50257×768 table split across two bindings, and tokens outside
//! the vocabulary. The backward reference is checked by finite differences.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::encoder::{encoder_backward, encoder_forward};
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
