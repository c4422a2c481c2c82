//! Launchers for shaders/mha.wgsl: general multi-head attention with
//! torch.nn.MultiheadAttention semantics, for the encoder–decoder Transformer.
//! `mha_forward` writes out (B, Tq, C) and the per-row log-sum-exp stats (B, NH, Tq) from
//! q (B, Tq, q_stride) and kv (B, Tk, kv_stride), where [`MhaLayout`] says at which
//! channels q, k and v sit (self-attention: one packed (B, T, 3C) tensor; cross-attention:
//! q (B, Tq, C) and kv (B, Tk, 2C)); optionally causal (Tq = Tk) and with a key padding
//! mask (B, Tk) of i32, nonzero = padding. `mha_backward` adds into dq and dkv in two
//! launches (`mha_backward_dq`, then `mha_backward_dkv`, which reads the per-row
//! D = Σ dout·out the first writes to a scratch tensor made at record time). A query with
//! no visible key gets out = 0 and zero gradients (torch gives NaN). No Tq×Tk matrix is
//! stored. Head sizes up to [`MAX_HEAD_SIZE`]; batches are split into chunks when a
//! tensor exceeds one binding. Only the fused kernels exist here: GPT-2's
//! `attention` family keeps its CPU-adapter matmul form to itself.
//! CPU references: `crate::reference::mha`.

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use super::{batch_chunks, expect_dtype, expect_numel, groups_1d, shaders::MHA};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, Schedule, Slot, Tensor};

/// Where q, k and v sit in the rows of their tensors. Head h of q is at channels
/// [q_off + h·HS, q_off + (h+1)·HS) of a q row of `q_stride` floats; k and v likewise at
/// `k_off` and `v_off` in a kv row of `kv_stride` floats. The gradients dq and dkv have
/// the same layouts as q and kv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MhaLayout {
    pub q_stride: usize,
    pub q_off: usize,
    pub kv_stride: usize,
    pub k_off: usize,
    pub v_off: usize,
}

impl MhaLayout {
    /// Self-attention on a packed qkv (B, T, 3C): q, k, v at channels 0, C, 2C; pass the
    /// same tensor as q and kv (and the same dqkv as dq and dkv).
    pub fn packed(c: usize) -> Self {
        MhaLayout {
            q_stride: 3 * c,
            q_off: 0,
            kv_stride: 3 * c,
            k_off: c,
            v_off: 2 * c,
        }
    }

    /// Cross-attention: q (B, Tq, C), and kv (B, Tk, 2C) with k and v at channels 0, C.
    pub fn cross(c: usize) -> Self {
        MhaLayout {
            q_stride: c,
            q_off: 0,
            kv_stride: 2 * c,
            k_off: 0,
            v_off: c,
        }
    }

    /// Error unless q, k and v of `c` channels each fit their rows and k, v do not overlap.
    fn check(&self, c: usize) -> Result<()> {
        let fits = |off: usize, stride: usize| off + c <= stride;
        if !fits(self.q_off, self.q_stride)
            || !fits(self.k_off, self.kv_stride)
            || !fits(self.v_off, self.kv_stride)
            || self.k_off.abs_diff(self.v_off) < c
        {
            return Err(Error::Invalid(format!(
                "mha: layout {self:?} does not hold q, k and v of {c} channels each \
                 (off + C must be ≤ stride, and k and v must not overlap)"
            )));
        }
        Ok(())
    }
}

/// Mirrors `MhaParams` in shaders/mha.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MhaParams {
    b: u32,         // batch rows in this launch (a chunk of B)
    tq: u32,        // query positions Tq
    tk: u32,        // key positions Tk
    c: u32,         // channels C = NH·HS of out
    nh: u32,        // heads NH
    hs: u32,        // head size HS = C / NH
    q_stride: u32,  // floats per row of q (and dq)
    q_off: u32,     // channel of head 0's q
    kv_stride: u32, // floats per row of kv (and dkv)
    k_off: u32,     // channel of head 0's k
    v_off: u32,     // channel of head 0's v
    causal: u32,    // 1: key j visible to query i only if j ≤ i
    has_mask: u32,  // 1: the mask binding holds the key padding mask
    scale: f32,     // 1/√HS
}

/// Most positions of one head per workgroup.
const MAX_WG: usize = 64;

/// Floats of one per-row workgroup array, (HS, WG) (`ROW_FLOATS` in the shader).
const ROW_FLOATS: usize = 2048;

/// Largest head size the launchers accept: per-row vectors live in workgroup memory,
/// WG·HS ≤ ROW_FLOATS, with at least 8 rows per workgroup (as `attention`).
pub const MAX_HEAD_SIZE: usize = ROW_FLOATS / 8;

/// The workgroup size (override `WG`) for a launch over `n` positions: `MAX_WG`, less
/// when `n` is shorter (rounded up to a power of two) or when WG·HS would pass ROW_FLOATS.
fn workgroup_size(n: usize, hs: usize) -> usize {
    let fit = ROW_FLOATS / hs;
    let fit = 1usize << fit.ilog2(); // largest power of two ≤ fit
    n.max(1).next_power_of_two().min(MAX_WG).min(fit)
}

pub const MHA_FORWARD: KernelDesc = KernelDesc {
    shader: &MHA,
    entry: "mha_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const MHA_BACKWARD_DQ: KernelDesc = KernelDesc {
    shader: &MHA,
    entry: "mha_backward_dq",
    bindings: &[
        Binding::ReadWrite,
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

pub const MHA_BACKWARD_DKV: KernelDesc = KernelDesc {
    shader: &MHA,
    entry: "mha_backward_dkv",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// The dimensions both launchers share, checked: Tq, Tk, C, NH, the head size, causal.
#[derive(Clone, Copy)]
struct Dims {
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    hs: usize,
    causal: bool,
}

/// Check what a caller can get wrong about the dimensions (C / NH, the head size, causal
/// with Tq ≠ Tk, the layout) and the mask, naming the problem.
#[allow(clippy::too_many_arguments)]
fn check_dims(
    mask: Option<&Tensor>,
    layout: &MhaLayout,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> Result<Dims> {
    if nh == 0 || !c.is_multiple_of(nh) {
        return Err(Error::Invalid(format!(
            "mha: {c} channels do not split into {nh} heads"
        )));
    }
    let hs = c / nh;
    if hs == 0 || hs > MAX_HEAD_SIZE {
        return Err(Error::Invalid(format!(
            "mha: head size {hs} (C {c} / NH {nh}) is outside the supported range \
             1..={MAX_HEAD_SIZE} (MAX_HEAD_SIZE)"
        )));
    }
    if causal && tq != tk {
        return Err(Error::Invalid(format!(
            "mha: causal attention needs as many queries as keys, got Tq {tq} and Tk {tk}"
        )));
    }
    layout.check(c)?;
    if let Some(mask) = mask {
        expect_dtype(mask, DType::I32)?;
        expect_numel(mask, b * tk)?;
    }
    Ok(Dims {
        tq,
        tk,
        c,
        nh,
        hs,
        causal,
    })
}

fn params(n: usize, d: Dims, layout: &MhaLayout, has_mask: bool) -> MhaParams {
    MhaParams {
        b: n as u32,
        tq: d.tq as u32,
        tk: d.tk as u32,
        c: d.c as u32,
        nh: d.nh as u32,
        hs: d.hs as u32,
        q_stride: layout.q_stride as u32,
        q_off: layout.q_off as u32,
        kv_stride: layout.kv_stride as u32,
        k_off: layout.k_off as u32,
        v_off: layout.v_off as u32,
        causal: d.causal as u32,
        has_mask: has_mask as u32,
        scale: (1.0 / (d.hs as f64).sqrt()) as f32,
    }
}

/// The mask's binding for batch rows `rows`, or, without a mask, `stand_in` (a read-only
/// input of the same launch: the kernel reads the mask only when `has_mask` is set, and a
/// binding cannot be left out).
fn mask_slot<'a>(
    mask: Option<&'a Tensor>,
    rows: Range<usize>,
    tk: usize,
    stand_in: Slot<'a>,
) -> Slot<'a> {
    match mask {
        Some(m) => m.rows_slot(rows, tk),
        None => stand_in,
    }
}

/// out (B, Tq, C), stats (B, NH, Tq) = multi-head attention of the queries in q
/// (B, Tq, q_stride) over the keys and values in kv (B, Tk, kv_stride), at the channels
/// `layout` gives. `mask` (B, Tk) i32, nonzero = padding, hides keys from every query of
/// their batch row; `causal` (only with Tq = Tk) hides keys j > i from query i. stats
/// holds each row's log-sum-exp of the scaled visible scores, for the backward pass; a
/// row with no visible key gets out = 0 and stats = -f32::MAX.
#[allow(clippy::too_many_arguments)]
pub fn mha_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    stats: &Tensor,
    q: &Tensor,
    kv: &Tensor,
    mask: Option<&Tensor>,
    layout: MhaLayout,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> Result<()> {
    let d = check_dims(mask, &layout, b, tq, tk, c, nh, causal)?;
    expect_numel(out, b * tq * c)?;
    expect_numel(stats, b * nh * tq)?;
    expect_numel(q, b * tq * layout.q_stride)?;
    expect_numel(kv, b * tk * layout.kv_stride)?;
    if b * tq == 0 {
        return Ok(());
    }
    let (q_row, kv_row) = (tq * layout.q_stride, tk * layout.kv_stride);
    let mut per_batch = vec![(out, tq * c), (stats, nh * tq), (q, q_row), (kv, kv_row)];
    per_batch.extend(mask.map(|m| (m, tk)));
    let wg = workgroup_size(tq, d.hs);
    let constants = [("WG", wg as f64)];
    for rows in batch_chunks(ctx, "mha", b, &per_batch)? {
        let n = rows.len();
        let label = format!(
            "mha_forward {} <- {}, {} [batch {rows:?}]",
            out.label, q.label, kv.label
        );
        let kv_slot = kv.rows_slot(rows.clone(), kv_row);
        let slots = [
            out.rows_slot(rows.clone(), tq * c),
            stats.rows_slot(rows.clone(), nh * tq),
            q.rows_slot(rows.clone(), q_row),
            kv_slot,
            mask_slot(mask, rows.clone(), tk, kv_slot),
        ];
        s.dispatch(
            ctx,
            &MHA_FORWARD,
            &constants,
            &label,
            &slots,
            Some(&params(n, d, &layout, mask.is_some())),
            groups_1d(n * nh * tq.div_ceil(wg), 1),
        )?;
    }
    Ok(())
}

/// dq (layout of q) += the gradient of mha_forward with respect to q, and dkv (layout of
/// kv) += its gradient with respect to k and v, given dout (B, Tq, C), the forward's
/// inputs q, kv, mask and its outputs out and stats. Only q's channels of dq and k's and
/// v's channels of dkv are touched; for self-attention pass one dqkv as both.
#[allow(clippy::too_many_arguments)]
pub fn mha_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dq: &Tensor,
    dkv: &Tensor,
    dout: &Tensor,
    q: &Tensor,
    kv: &Tensor,
    mask: Option<&Tensor>,
    out: &Tensor,
    stats: &Tensor,
    layout: MhaLayout,
    b: usize,
    tq: usize,
    tk: usize,
    c: usize,
    nh: usize,
    causal: bool,
) -> Result<()> {
    let d = check_dims(mask, &layout, b, tq, tk, c, nh, causal)?;
    expect_numel(dq, b * tq * layout.q_stride)?;
    expect_numel(dkv, b * tk * layout.kv_stride)?;
    expect_numel(dout, b * tq * c)?;
    expect_numel(q, b * tq * layout.q_stride)?;
    expect_numel(kv, b * tk * layout.kv_stride)?;
    expect_numel(out, b * tq * c)?;
    expect_numel(stats, b * nh * tq)?;
    if b * tq * tk == 0 {
        return Ok(()); // no (query, key) pair: every gradient is zero
    }
    // D_i = Σ dout·out per head row, written by the dq launch and read by the dk/dv one.
    // Made once here, at record time; the bind groups keep it alive.
    let delta = Tensor::zeros(
        ctx,
        &format!("{}.delta", stats.label),
        &[b, nh, tq],
        DType::F32,
    )?;
    let (q_row, kv_row) = (tq * layout.q_stride, tk * layout.kv_stride);
    let mut per_batch = vec![
        (dq, q_row),
        (dkv, kv_row),
        (&delta, nh * tq),
        (dout, tq * c),
        (q, q_row),
        (kv, kv_row),
        (out, tq * c),
        (stats, nh * tq),
    ];
    per_batch.extend(mask.map(|m| (m, tk)));
    let (wg_q, wg_k) = (workgroup_size(tq, d.hs), workgroup_size(tk, d.hs));
    for rows in batch_chunks(ctx, "mha", b, &per_batch)? {
        let n = rows.len();
        let p = params(n, d, &layout, mask.is_some());
        let dq_slot = dq.rows_slot(rows.clone(), q_row);
        let dkv_slot = dkv.rows_slot(rows.clone(), kv_row);
        let delta_slot = delta.rows_slot(rows.clone(), nh * tq);
        let dout_slot = dout.rows_slot(rows.clone(), tq * c);
        let q_slot = q.rows_slot(rows.clone(), q_row);
        let kv_slot = kv.rows_slot(rows.clone(), kv_row);
        let out_slot = out.rows_slot(rows.clone(), tq * c);
        let stats_slot = stats.rows_slot(rows.clone(), nh * tq);
        let mask_slot = mask_slot(mask, rows.clone(), tk, kv_slot);
        let label = format!(
            "mha_backward_dq {} <- {} [batch {rows:?}]",
            dq.label, dout.label
        );
        s.dispatch(
            ctx,
            &MHA_BACKWARD_DQ,
            &[("WG", wg_q as f64)],
            &label,
            &[
                dq_slot, delta_slot, dout_slot, q_slot, kv_slot, out_slot, stats_slot, mask_slot,
            ],
            Some(&p),
            groups_1d(n * nh * tq.div_ceil(wg_q), 1),
        )?;
        let label = format!(
            "mha_backward_dkv {} <- {} [batch {rows:?}]",
            dkv.label, dout.label
        );
        s.dispatch(
            ctx,
            &MHA_BACKWARD_DKV,
            &[("WG", wg_k as f64)],
            &label,
            &[
                dkv_slot, dout_slot, q_slot, kv_slot, stats_slot, delta_slot, mask_slot,
            ],
            Some(&p),
            groups_1d(n * nh * tk.div_ceil(wg_k), 1),
        )?;
    }
    Ok(())
}
