//! mha_forward and mha_backward against their f64 references: the backward reference
//! against finite differences (self and cross layouts, with a mask), the reference against
//! GPT-2's attention reference bit for bit, then the kernels at awkward sizes (self-
//! attention causal and not, padding masks of uneven lengths, cross-attention Tq ≠ Tk,
//! T = 1, HS = 8, 12, 16, 64), a fully masked batch row, batches split over bindings, a
//! folded launch grid, two runs for identical bits, and the errors a caller can cause.

use wgformer::gpu::{DType, GpuContext, Needs, Schedule, Tensor};
use wgformer::kernels::mha::{mha_backward, mha_forward, MhaLayout};
use wgformer::reference::attention as gpt2;
use wgformer::reference::mha as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{
    assert_close64, assert_gradient, on_each_adapter, same_bits, test_contexts, to_f64,
};

/// One attention problem: batch, query and key positions, channels, heads, causal,
/// self-attention (packed qkv) or cross-attention (q and kv), and the key padding of each
/// batch row (`pad[b]` keys at the end of row b are padding; `None`: no mask at all).
#[derive(Clone, Debug)]
struct Case {
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
    packed: bool,
    pad: Option<Vec<usize>>,
}

impl Case {
    fn packed(b: usize, t: usize, c: usize, nh: usize, causal: bool) -> Self {
        Case {
            b,
            tq: t,
            tk: t,
            c,
            nh,
            causal,
            packed: true,
            pad: None,
        }
    }
    fn cross(b: usize, tq: usize, tk: usize, c: usize, nh: usize) -> Self {
        Case {
            b,
            tq,
            tk,
            c,
            nh,
            causal: false,
            packed: false,
            pad: None,
        }
    }
    fn pad(mut self, pad: &[usize]) -> Self {
        assert_eq!(pad.len(), self.b);
        self.pad = Some(pad.to_vec());
        self
    }
    fn layout(&self) -> MhaLayout {
        if self.packed {
            MhaLayout::packed(self.c)
        } else {
            MhaLayout::cross(self.c)
        }
    }
    fn q_len(&self) -> usize {
        self.b * self.tq * self.layout().q_stride
    }
    fn kv_len(&self) -> usize {
        self.b * self.tk * self.layout().kv_stride
    }
    /// The (B, Tk) mask: 1 on the last pad[b] keys of row b.
    fn mask(&self) -> Option<Vec<i32>> {
        let pad = self.pad.as_ref()?;
        Some(
            (0..self.b * self.tk)
                .map(|n| (n % self.tk >= self.tk - pad[n / self.tk]) as i32)
                .collect(),
        )
    }
}

/// Random inputs: q, kv (for a packed case one qkv, so kv == q), dout, and the prior
/// gradients dq, dkv the backward adds into (one prior dqkv for a packed case).
struct Inputs {
    q: Vec<f32>,
    kv: Vec<f32>,
    dout: Vec<f32>,
    dq: Vec<f32>,
    dkv: Vec<f32>,
}

fn inputs(rng: &mut Rng, case: &Case) -> Inputs {
    let q = rng.vec_normal(case.q_len(), 1.0);
    let dq = rng.vec_uniform(case.q_len(), -1.0, 1.0);
    let (kv, dkv) = if case.packed {
        (q.clone(), dq.clone())
    } else {
        (
            rng.vec_normal(case.kv_len(), 1.0),
            rng.vec_uniform(case.kv_len(), -1.0, 1.0),
        )
    };
    let dout = rng.vec_uniform(case.b * case.tq * case.c, -1.0, 1.0);
    Inputs {
        q,
        kv,
        dout,
        dq,
        dkv,
    }
}

/// What forward then backward give: out, stats, dq and dkv (for a packed case both are
/// the one dqkv, prior + gradient).
struct Outputs<T> {
    out: Vec<T>,
    stats: Vec<T>,
    dq: Vec<T>,
    dkv: Vec<T>,
}

/// Forward then backward in one schedule.
fn run_gpu(ctx: &GpuContext, case: &Case, x: &Inputs) -> Outputs<f32> {
    let Case {
        b,
        tq,
        tk,
        c,
        nh,
        causal,
        ..
    } = *case;
    let layout = case.layout();
    let (qs, kvs) = (layout.q_stride, layout.kv_stride);
    let t_q = Tensor::from_f32(ctx, "q", &[b, tq, qs], &x.q).unwrap();
    let t_dq = Tensor::from_f32(ctx, "dq", &[b, tq, qs], &x.dq).unwrap();
    let (t_kv, t_dkv) = if case.packed {
        (t_q.clone(), t_dq.clone())
    } else {
        (
            Tensor::from_f32(ctx, "kv", &[b, tk, kvs], &x.kv).unwrap(),
            Tensor::from_f32(ctx, "dkv", &[b, tk, kvs], &x.dkv).unwrap(),
        )
    };
    let t_mask = case
        .mask()
        .map(|m| Tensor::from_i32(ctx, "mask", &[b, tk], &m).unwrap());
    let mask = t_mask.as_ref();
    let t_dout = Tensor::from_f32(ctx, "dout", &[b, tq, c], &x.dout).unwrap();
    let t_out = Tensor::zeros(ctx, "out", &[b, tq, c], DType::F32).unwrap();
    let t_stats = Tensor::zeros(ctx, "stats", &[b, nh, tq], DType::F32).unwrap();
    let mut s = Schedule::new("mha");
    mha_forward(
        &mut s, ctx, &t_out, &t_stats, &t_q, &t_kv, mask, layout, b, tq, tk, c, nh, causal,
    )
    .unwrap();
    mha_backward(
        &mut s, ctx, &t_dq, &t_dkv, &t_dout, &t_q, &t_kv, mask, &t_out, &t_stats, layout, b, tq,
        tk, c, nh, causal,
    )
    .unwrap();
    s.run(ctx);
    let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
    Outputs {
        out: read(&t_out),
        stats: read(&t_stats),
        dq: read(&t_dq),
        dkv: read(&t_dkv),
    }
}

/// The references' answer to the same problem. For a packed case the reference adds into
/// two buffers, each starting from the prior dqkv, and takes q's channels from the first
/// and k's and v's from the second: one dqkv, accumulated in the reference's order.
fn run_cpu(case: &Case, x: &Inputs) -> Outputs<f64> {
    let Case {
        b,
        tq,
        tk,
        c,
        nh,
        causal,
        ..
    } = *case;
    let layout = case.layout();
    let (q, kv, dout) = (to_f64(&x.q), to_f64(&x.kv), to_f64(&x.dout));
    let mask = case.mask();
    let mask = mask.as_deref();
    let mut out = vec![0f64; b * tq * c];
    let mut stats = vec![0f64; b * nh * tq];
    cpu::mha_forward(
        &mut out, &mut stats, &q, &kv, mask, layout, b, tq, tk, c, nh, causal,
    );
    let (mut dq, mut dkv) = (to_f64(&x.dq), to_f64(&x.dkv));
    cpu::mha_backward(
        &mut dq, &mut dkv, &dout, &q, &kv, mask, &out, &stats, layout, b, tq, tk, c, nh, causal,
    );
    if case.packed {
        for (n, (a, g)) in dq.iter_mut().zip(&dkv).enumerate() {
            if n % (3 * c) >= c {
                *a = *g;
            }
        }
        dkv = dq.clone();
    }
    Outputs {
        out,
        stats,
        dq,
        dkv,
    }
}

/// Compare one GPU run with the references at the reduction tolerances; returns the max
/// |Δ| of (out, stats, dq, dkv).
fn check(ctx: &GpuContext, rng: &mut Rng, case: &Case) -> [f32; 4] {
    let x = inputs(rng, case);
    let got = run_gpu(ctx, case, &x);
    let want = run_cpu(case, &x);
    let close = |what: &str, g: &[f32], w: &[f64]| {
        assert_close64(&format!("mha {what} {case:?}"), g, w, 1e-4, 1e-3).max_abs
    };
    let errs = [
        close("forward out", &got.out, &want.out),
        close("forward stats", &got.stats, &want.stats),
        close("backward dq", &got.dq, &want.dq),
        close("backward dkv", &got.dkv, &want.dkv),
    ];
    eprintln!(
        "mha {case:?}: max |Δ| out {:e}, stats {:e}, dq {:e}, dkv {:e}",
        errs[0], errs[1], errs[2], errs[3]
    );
    errs
}

#[test]
fn mha_backward_reference_matches_finite_differences() {
    let (c, nh) = (6, 2); // HS = 3
    let cases = [
        // Self-attention, causal, row 1 padded to 2 of 5 keys.
        Case::packed(2, 5, c, nh, true).pad(&[0, 3]),
        // Self-attention, not causal, row 0 padded to 1 key.
        Case::packed(2, 5, c, nh, false).pad(&[4, 1]),
        // Cross-attention, Tq = 3, Tk = 4, uneven padding.
        Case::cross(2, 3, 4, c, nh).pad(&[1, 2]),
    ];
    let mut rng = Rng::new(5);
    for case in cases {
        let Case {
            b,
            tq,
            tk,
            c,
            nh,
            causal,
            ..
        } = case;
        let layout = case.layout();
        let mask = case.mask();
        let mask = mask.as_deref();
        let x = inputs(&mut rng, &case);
        let (q, kv, dout) = (to_f64(&x.q), to_f64(&x.kv), to_f64(&x.dout));
        let forward = |q: &[f64], kv: &[f64]| {
            let mut out = vec![0f64; b * tq * c];
            let mut stats = vec![0f64; b * nh * tq];
            cpu::mha_forward(
                &mut out, &mut stats, q, kv, mask, layout, b, tq, tk, c, nh, causal,
            );
            (out, stats)
        };
        let loss = |out: Vec<f64>| -> f64 { out.iter().zip(&dout).map(|(o, d)| o * d).sum() };
        let (out, stats) = forward(&q, &kv);
        let mut dq = vec![0f64; q.len()];
        let mut dkv = vec![0f64; kv.len()];
        cpu::mha_backward(
            &mut dq, &mut dkv, &dout, &q, &kv, mask, &out, &stats, layout, b, tq, tk, c, nh, causal,
        );
        let name = format!("mha_backward {case:?}");
        if case.packed {
            // q and kv are one tensor: its gradient is the sum of the two buffers.
            let dqkv: Vec<f64> = dq.iter().zip(&dkv).map(|(a, g)| a + g).collect();
            let f = |x: &[f64]| loss(forward(x, x).0);
            assert_gradient(&format!("{name} dqkv"), &q, &dqkv, f, usize::MAX);
        } else {
            let f = |x: &[f64]| loss(forward(x, &kv).0);
            assert_gradient(&format!("{name} dq"), &q, &dq, f, usize::MAX);
            let f = |x: &[f64]| loss(forward(&q, x).0);
            assert_gradient(&format!("{name} dkv"), &kv, &dkv, f, usize::MAX);
        }
        // Gradients are added into, not written.
        let mut again_q = vec![1f64; q.len()];
        let mut again_kv = vec![1f64; kv.len()];
        cpu::mha_backward(
            &mut again_q,
            &mut again_kv,
            &dout,
            &q,
            &kv,
            mask,
            &out,
            &stats,
            layout,
            b,
            tq,
            tk,
            c,
            nh,
            causal,
        );
        for (a, g) in again_q.iter().chain(&again_kv).zip(dq.iter().chain(&dkv)) {
            assert!((a - 1.0 - g).abs() < 1e-12, "mha_backward must add into");
        }
    }
}

#[test]
fn mha_reference_matches_gpt2_attention_bit_for_bit() {
    // Packed, causal, unmasked: GPT-2's attention. The two references must agree exactly,
    // forward and backward, so the two families agree.
    let mut rng = Rng::new(11);
    for (b, t, c, nh) in [(2, 7, 32, 4), (1, 5, 48, 4), (2, 1, 12, 3)] {
        let case = Case::packed(b, t, c, nh, true);
        let x = inputs(&mut rng, &case);
        let mine = run_cpu(&case, &x);
        let (qkv, dout) = (to_f64(&x.q), to_f64(&x.dout));
        let mut out = vec![0f64; b * t * c];
        let mut stats = vec![0f64; b * nh * t];
        gpt2::attention_forward(&mut out, &mut stats, &qkv, b, t, c, nh);
        let mut dqkv = to_f64(&x.dq);
        gpt2::attention_backward(&mut dqkv, &dout, &qkv, &out, &stats, b, t, c, nh);
        assert_eq!(mine.out, out, "out {case:?}");
        assert_eq!(mine.stats, stats, "stats {case:?}");
        assert_eq!(mine.dq, dqkv, "dqkv {case:?}");
    }
}

#[test]
fn mha_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(42);
        let cases = [
            // The seq2seq fixture: d_model 32, 4 heads (HS = 8); decoder self-attention.
            Case::packed(2, 7, 32, 4, true),
            // ... with padded targets (causal and a mask together; row 1 keeps 3 keys).
            Case::packed(2, 7, 32, 4, true).pad(&[1, 4]),
            // Encoder self-attention: not causal, rows padded unevenly, one down to 1 key.
            Case::packed(3, 7, 48, 4, false).pad(&[0, 3, 6]),
            // Cross-attention, Tq ≠ Tk, with the encoder's padding mask.
            Case::cross(2, 5, 9, 32, 4).pad(&[2, 8]),
            Case::cross(3, 9, 5, 48, 4).pad(&[0, 1, 4]),
            Case::cross(2, 5, 9, 32, 4),
            // T = 1 with HS = 12 (not a multiple of 4).
            Case::packed(2, 1, 48, 4, true),
            Case::packed(2, 1, 48, 4, false).pad(&[0, 0]),
            Case::cross(2, 1, 1, 48, 4),
            Case::cross(2, 1, 7, 48, 4).pad(&[6, 0]),
            // GPT-2 width: C = 768, NH = 12 (HS = 64), small T.
            Case::packed(1, 7, 768, 12, true),
            Case::cross(2, 3, 5, 768, 12).pad(&[0, 2]),
            // Longer rows: several workgroups of queries and of keys, WG = 64 (HS = 16).
            Case::packed(2, 70, 64, 4, true).pad(&[0, 30]),
            Case::cross(1, 65, 130, 64, 4).pad(&[7]),
        ];
        let mut worst = [0f32; 4];
        for case in &cases {
            let e = check(ctx, &mut rng, case);
            for (w, e) in worst.iter_mut().zip(e) {
                *w = w.max(e);
            }
        }
        eprintln!(
            "mha worst max |Δ|: out {:e}, stats {:e}, dq {:e}, dkv {:e} (atol 1e-4, rtol 1e-3)",
            worst[0], worst[1], worst[2], worst[3]
        );
    });
}

#[test]
fn mha_fully_masked_rows_give_zeros_and_finite_gradients() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(7);
        // Batch row 1 is all padding: its queries see no key at all. Cross and self.
        for case in [
            Case::cross(3, 5, 9, 32, 4).pad(&[2, 9, 0]),
            Case::packed(3, 7, 32, 4, false).pad(&[0, 7, 3]),
        ] {
            check(ctx, &mut rng, &case);
            let x = inputs(&mut rng, &case);
            let got = run_gpu(ctx, &case, &x);
            let (tq, c) = (case.tq, case.c);
            assert!(got.out[tq * c..2 * tq * c].iter().all(|&o| o == 0.0));
            for v in [&got.out, &got.stats, &got.dq, &got.dkv] {
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{case:?}: non-finite value"
                );
            }
            // Nothing is added to the masked row's gradients: they keep their prior values.
            let (qs, kvs) = (case.layout().q_stride, case.layout().kv_stride);
            let row = |v: &[f32], len: usize| v[len..2 * len].to_vec();
            let dq_row = row(&got.dq, tq * qs);
            assert!(same_bits(&dq_row, &row(&x.dq, tq * qs)), "{case:?}: dq");
            let dkv_row = row(&got.dkv, case.tk * kvs);
            assert!(
                same_bits(&dkv_row, &row(&x.dkv, case.tk * kvs)),
                "{case:?}: dkv"
            );
        }
        // Causal with the first keys padded (left padding): queries 0..3 of row 0 see
        // nothing, later ones see keys from 3 on.
        let case = Case::packed(2, 7, 32, 4, true);
        let x = inputs(&mut rng, &case);
        let mask: Vec<i32> = (0..14).map(|n| (n < 3) as i32).collect();
        let (b, t, c, nh) = (2, 7, 32, 4);
        let layout = case.layout();
        let t_qkv = Tensor::from_f32(ctx, "qkv", &[b, t, 3 * c], &x.q).unwrap();
        let t_dqkv = Tensor::from_f32(ctx, "dqkv", &[b, t, 3 * c], &x.dq).unwrap();
        let t_mask = Tensor::from_i32(ctx, "mask", &[b, t], &mask).unwrap();
        let t_dout = Tensor::from_f32(ctx, "dout", &[b, t, c], &x.dout).unwrap();
        let t_out = Tensor::zeros(ctx, "out", &[b, t, c], DType::F32).unwrap();
        let t_stats = Tensor::zeros(ctx, "stats", &[b, nh, t], DType::F32).unwrap();
        let mut s = Schedule::new("mha left padding");
        let m = Some(&t_mask);
        mha_forward(
            &mut s, ctx, &t_out, &t_stats, &t_qkv, &t_qkv, m, layout, b, t, t, c, nh, true,
        )
        .unwrap();
        mha_backward(
            &mut s, ctx, &t_dqkv, &t_dqkv, &t_dout, &t_qkv, &t_qkv, m, &t_out, &t_stats, layout, b,
            t, t, c, nh, true,
        )
        .unwrap();
        s.run(ctx);
        let read = |t: &Tensor| ctx.block_on(t.read_f32(ctx)).unwrap();
        let (out, stats, dqkv) = (read(&t_out), read(&t_stats), read(&t_dqkv));
        let q = to_f64(&x.q);
        let mut want_out = vec![0f64; b * t * c];
        let mut want_stats = vec![0f64; b * nh * t];
        cpu::mha_forward(
            &mut want_out,
            &mut want_stats,
            &q,
            &q,
            Some(&mask),
            layout,
            b,
            t,
            t,
            c,
            nh,
            true,
        );
        let (mut dq, mut dkv) = (to_f64(&x.dq), to_f64(&x.dq));
        cpu::mha_backward(
            &mut dq,
            &mut dkv,
            &to_f64(&x.dout),
            &q,
            &q,
            Some(&mask),
            &want_out,
            &want_stats,
            layout,
            b,
            t,
            t,
            c,
            nh,
            true,
        );
        for (n, (a, g)) in dq.iter_mut().zip(&dkv).enumerate() {
            if n % (3 * c) >= c {
                *a = *g;
            }
        }
        assert_close64("mha left padding out", &out, &want_out, 1e-4, 1e-3);
        assert_close64("mha left padding stats", &stats, &want_stats, 1e-4, 1e-3);
        assert_close64("mha left padding dqkv", &dqkv, &dq, 1e-4, 1e-3);
        assert!(out[..3 * c].iter().all(|&o| o == 0.0));
        assert!(dqkv.iter().all(|x| x.is_finite()));
    });
}

#[test]
fn mha_is_deterministic() {
    on_each_adapter(|ctx| {
        for case in [
            Case::packed(2, 64, 48, 4, true).pad(&[0, 5]),
            Case::cross(2, 33, 40, 48, 4).pad(&[3, 0]),
        ] {
            let x = inputs(&mut Rng::new(3), &case);
            let first = run_gpu(ctx, &case, &x);
            for _ in 0..2 {
                let again = run_gpu(ctx, &case, &x);
                assert!(
                    same_bits(&first.out, &again.out),
                    "mha_forward out changed bits"
                );
                assert!(
                    same_bits(&first.stats, &again.stats),
                    "mha_forward stats changed bits"
                );
                assert!(
                    same_bits(&first.dq, &again.dq),
                    "mha_backward dq changed bits"
                );
                assert!(
                    same_bits(&first.dkv, &again.dkv),
                    "mha_backward dkv changed bits"
                );
            }
        }
    });
}

#[test]
fn mha_splits_batches_over_bindings() {
    // Cross-attention, Tq = 16, Tk = 64, C = 48: one batch row of kv (64 × 96 floats) is
    // 24,576 bytes; a 30,000-byte binding limit makes each of the three rows its own
    // launch. Every tensor's batch row (the mask's: 256 bytes) is a multiple of 256 bytes,
    // so each row starts at an aligned offset.
    let case = Case::cross(3, 16, 64, 48, 4).pad(&[0, 5, 63]);
    let (b, tq, tk, c, nh) = (case.b, case.tq, case.tk, case.c, case.nh);
    for ctx in test_contexts(&Needs::default()) {
        let ctx = ctx.with_binding_limit(30_000);
        let layout = case.layout();
        let q = Tensor::zeros(&ctx, "q", &[b, tq, c], DType::F32).unwrap();
        let kv = Tensor::zeros(&ctx, "kv", &[b, tk, 2 * c], DType::F32).unwrap();
        let out = Tensor::zeros(&ctx, "out", &[b, tq, c], DType::F32).unwrap();
        let stats = Tensor::zeros(&ctx, "stats", &[b, nh, tq], DType::F32).unwrap();
        let mask = Tensor::zeros(&ctx, "mask", &[b, tk], DType::I32).unwrap();
        let mut s = Schedule::new("mha chunks");
        mha_forward(
            &mut s,
            &ctx,
            &out,
            &stats,
            &q,
            &kv,
            Some(&mask),
            layout,
            b,
            tq,
            tk,
            c,
            nh,
            false,
        )
        .unwrap();
        assert_eq!(s.launches(), b, "one forward launch per batch row");
        check(&ctx, &mut Rng::new(8), &case);
    }
}

#[test]
fn mha_folds_wide_launches() {
    // One workgroup per (b, h, block of positions): B·NH = 2 · 32,769 heads is 65,538
    // workgroups, more than one dimension's 65,535, so every grid is folded into 2-D (with
    // spare workgroups the kernels must skip). HS = 1 keeps it small.
    on_each_adapter(|ctx| {
        let nh = 32_769;
        check(
            ctx,
            &mut Rng::new(9),
            &Case::cross(2, 3, 5, nh, nh).pad(&[1, 0]),
        );
    });
}

#[test]
fn mha_errors_name_the_problem() {
    on_each_adapter(|ctx| {
        let tensor = |label: &str, n: usize| Tensor::zeros(ctx, label, &[n], DType::F32).unwrap();
        let mut s = Schedule::new("mha errors");
        let (b, tq, tk, c, nh) = (2, 5, 9, 32, 4);
        let layout = MhaLayout::cross(c);
        let q = tensor("q", b * tq * c);
        let kv = tensor("kv", b * tk * 2 * c);
        let out = tensor("out", b * tq * c);
        let stats = tensor("stats", b * nh * tq);
        let mask = Tensor::zeros(ctx, "mask", &[b, tk], DType::I32).unwrap();
        let fwd = |s: &mut Schedule, mask: Option<&Tensor>, tk: usize, nh: usize, causal| {
            mha_forward(
                s, ctx, &out, &stats, &q, &kv, mask, layout, b, tq, tk, c, nh, causal,
            )
            .unwrap_err()
            .to_string()
        };
        // Causal with Tq ≠ Tk.
        let e = fwd(&mut s, Some(&mask), tk, nh, true);
        assert!(e.contains("causal") && e.contains("Tq 5 and Tk 9"), "{e}");
        // C not a multiple of NH.
        let e = fwd(&mut s, Some(&mask), tk, 5, false);
        assert!(e.contains("32 channels do not split into 5 heads"), "{e}");
        // A mask of the wrong size, or of floats.
        let short = Tensor::zeros(ctx, "short_mask", &[b, tk - 1], DType::I32).unwrap();
        let e = fwd(&mut s, Some(&short), tk, nh, false);
        assert!(e.contains("short_mask"), "{e}");
        let float = tensor("float_mask", b * tk);
        let e = fwd(&mut s, Some(&float), tk, nh, false);
        assert!(e.contains("float_mask") && e.contains("i32"), "{e}");
        // kv sized for another Tk.
        let e = fwd(&mut s, None, tk + 1, nh, false);
        assert!(e.contains("tensor kv"), "{e}");
        // A layout that does not hold q, k and v.
        let bad = MhaLayout {
            v_off: 16,
            ..layout
        };
        let e = mha_forward(
            &mut s, ctx, &out, &stats, &q, &kv, None, bad, b, tq, tk, c, nh, false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("layout"), "{e}");
        // The backward checks the same, and its own tensors.
        let e = mha_backward(
            &mut s,
            ctx,
            &q,
            &kv,
            &out,
            &q,
            &kv,
            Some(&short),
            &out,
            &stats,
            layout,
            b,
            tq,
            tk,
            c,
            nh,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("short_mask"), "{e}");
        let e = mha_backward(
            &mut s,
            ctx,
            &q,
            &kv,
            &out,
            &q,
            &kv,
            Some(&mask),
            &out,
            &stats,
            layout,
            b,
            tq,
            tk,
            c,
            nh,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("causal"), "{e}");
        let e = mha_backward(
            &mut s, ctx, &kv, &kv, &out, &q, &kv, None, &out, &stats, layout, b, tq, tk, c, nh,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tensor kv"), "{e}");
        assert_eq!(s.launches(), 0);
    });
}
