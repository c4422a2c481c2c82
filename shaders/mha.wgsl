// mha.wgsl: general multi-head attention (torch.nn.MultiheadAttention semantics) for the
// encoder–decoder Transformer, forward and backward: self- or cross-attention, causal or
// not, with an optional key padding mask. GPT-2's shaders/attention.wgsl is the special
// case packed, causal, unmasked; this file follows its structure.
//
// q is read from q (B, Tq, q_stride): head h of query row t at channel q_off + h·HS of
// row t. k and v are read from kv (B, Tk, kv_stride) at channels k_off + h·HS and
// v_off + h·HS. Self-attention binds one packed (B, T, 3C) tensor as both (stride 3C,
// offsets 0, C, 2C); cross-attention binds q (B, Tq, C) and kv (B, Tk, 2C). Key j is
// visible to query i unless mask[b, j] ≠ 0 (key padding) or, when causal, j > i. For a
// query row i of head h, over its visible keys j:
//   s[j] = q_i · k_j · scale   (scale = 1/√HS)
//   p[j] = softmax over j of s
//   out_i = Σ_j p[j] v_j        written to out (B, Tq, C), heads concatenated
// Only the row's log-sum-exp L_i = log Σ_j exp(s[j]) is saved (stats, (B, NH, Tq));
// backward recomputes p = exp(s - L_i), so memory never grows as Tq·Tk.
// A query with no visible key (its batch row all padding, or causal with every key up to
// it padded) gets out = 0, stats = LOWEST (-f32::MAX, standing in for log 0 = -∞), and
// adds nothing to any gradient (torch would give NaN there).
//
// One invocation owns one (b, h, position) row: a query row for mha_forward and
// mha_backward_dq, a key row for mha_backward_dkv. A workgroup holds WG consecutive
// positions of one head, so all its invocations walk the same keys (resp. queries) in the
// same order and read them, and their mask entries, at the same addresses; a padded key
// is skipped by the whole workgroup, the causal test is a branch inside the shared loop.
// The grid is 1-D over (b·NH + h, block of WG positions), folded by the scheduler when
// wide (see linear_workgroup). Every loop runs in a fixed order, so results are the same
// bits run after run.
//
// Per-row vectors (the query, the accumulators) live in workgroup memory, one column per
// invocation: element i of invocation li at [i·WG + li], as in attention.wgsl. Each entry
// point uses two arrays of ROW_FLOATS (8 KiB each, 16 KiB in all), so WG·HS ≤ ROW_FLOATS;
// the launcher picks WG per launch from the number of positions and HS and sets the
// override constant WG. Launchers: src/kernels/mha.rs. CPU references: src/reference/mha.rs.

// Mirrors `MhaParams` in src/kernels/mha.rs.
struct MhaParams {
    b: u32,          // batch rows in this launch (a chunk of B)
    tq: u32,         // query positions Tq
    tk: u32,         // key positions Tk
    c: u32,          // channels C = NH·HS of out
    nh: u32,         // heads NH
    hs: u32,         // head size HS = C / NH, with WG·HS ≤ ROW_FLOATS
    q_stride: u32,   // floats per row of q (and dq)
    q_off: u32,      // channel of head 0's q in a row of q
    kv_stride: u32,  // floats per row of kv (and dkv)
    k_off: u32,      // channel of head 0's k in a row of kv
    v_off: u32,      // channel of head 0's v in a row of kv
    causal: u32,     // 1: key j visible to query i only if j ≤ i (then Tq = Tk)
    has_mask: u32,   // 1: the mask binding holds the (B, Tk) key padding mask
    scale: f32,      // 1/√HS, computed in f64 on the host
}

const ROW_FLOATS: u32 = 2048u;  // floats of one per-row workgroup array: (HS, WG)
const LOWEST: f32 = -3.4028234663852886e38;  // -f32::MAX, exactly (Tint rejects a rounded literal)
override WG: u32 = 64u;         // positions of one head per workgroup

// The workgroup's head and block of positions, and this invocation's position in it.
struct Block {
    bh: u32,    // b·NH + h: the head's index among all heads; its stats rows start at bh·Tq
    t0: u32,    // first position of the block
    last: u32,  // last position of the block, min(t0 + WG, n) - 1
    t: u32,     // this invocation's position, clamped to last (lanes past it write nothing)
    q: u32,     // index in q of head h's q at query 0 of this batch row
    kv: u32,    // index in kv of channel h·HS at key 0 of this batch row (add k_off, v_off)
    out: u32,   // index in out of out[0] at query 0 of this batch row and head
    mask: u32,  // index in mask of key 0 of this batch row
}

// Workgroup g of the 1-D grid over n positions (g < workgroups(p, n)) is head g / blocks,
// block g % blocks.
fn block_of(g: u32, li: u32, p: MhaParams, n: u32) -> Block {
    let blocks = (n + WG - 1u) / WG;
    let bh = g / blocks;
    let t0 = (g % blocks) * WG;
    let last = min(t0 + WG, n) - 1u;
    let h = bh % p.nh;
    let b = bh / p.nh;
    return Block(bh, t0, last, min(t0 + li, last),
                 b * p.tq * p.q_stride + p.q_off + h * p.hs,
                 b * p.tk * p.kv_stride + h * p.hs,
                 b * p.tq * p.c + h * p.hs,
                 b * p.tk);
}

// B·NH·blocks over n positions; a folded grid has a few spare workgroups past it, which
// return at once.
fn workgroups(p: MhaParams, n: u32) -> u32 {
    return p.b * p.nh * ((n + WG - 1u) / WG);
}

// ---------------------------------------------------------------------------------------
// mha_forward: out (B, Tq, C) = softmax(q·kᵀ·scale, masked) · v; stats = L per query row.

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;    // (B, Tq, C)
@group(0) @binding(1) var<storage, read_write> fwd_stats: array<f32>;  // (B, NH, Tq) log-sum-exp
@group(0) @binding(2) var<storage, read> fwd_q: array<f32>;            // (B, Tq, q_stride)
@group(0) @binding(3) var<storage, read> fwd_kv: array<f32>;           // (B, Tk, kv_stride)
@group(0) @binding(4) var<storage, read> fwd_mask: array<i32>;         // (B, Tk) ≠ 0: padding
@group(0) @binding(5) var<uniform> fwd_p: MhaParams;

var<workgroup> fwd_qs: array<f32, ROW_FLOATS>;   // (HS, WG) each row's query, pre-scaled
var<workgroup> fwd_acc: array<f32, ROW_FLOATS>;  // (HS, WG) Σ exp(s - m) v so far

@compute @workgroup_size(WG)
fn mha_forward(@builtin(workgroup_id) wg: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(fwd_p, fwd_p.tq)) { return; }
    let r = block_of(g, li, fwd_p, fwd_p.tq);
    let HS = fwd_p.hs;
    let stride = fwd_p.kv_stride;  // between consecutive keys in kv
    let k0 = r.kv + fwd_p.k_off;   // k at key 0; key j at k0 + j·stride
    let v0 = r.kv + fwd_p.v_off;   // v likewise
    let qt = r.q + r.t * fwd_p.q_stride;
    for (var i = 0u; i < HS; i++) {
        fwd_qs[i * WG + li] = fwd_q[qt + i] * fwd_p.scale;
        fwd_acc[i * WG + li] = 0.0;
    }
    // Keys any row of the block may see: all Tk, or up to the block's last query.
    var kend = fwd_p.tk;
    if (fwd_p.causal != 0u) { kend = r.last + 1u; }

    // Online softmax: m is the running max of s, l = Σ exp(s - m). l = 0 until the row's
    // first visible key, which sets m (every later l is ≥ 1), so no infinity is needed.
    var m = 0.0;
    var l = 0.0;
    for (var j = 0u; j < kend; j++) {
        if (fwd_p.has_mask != 0u && fwd_mask[r.mask + j] != 0) { continue; }  // whole workgroup
        let k = k0 + j * stride;
        var s = 0.0;
        for (var i = 0u; i < HS; i++) { s = fma(fwd_qs[i * WG + li], fwd_kv[k + i], s); }
        if (fwd_p.causal == 0u || j <= r.t) {  // the loop is the block's, the row ends at t
            if (l == 0.0) {
                m = s;
            } else if (s > m) {
                let rescale = exp(m - s);
                l *= rescale;
                for (var i = 0u; i < HS; i++) { fwd_acc[i * WG + li] *= rescale; }
                m = s;
            }
            let e = exp(s - m);
            l += e;
            let v = v0 + j * stride;
            for (var i = 0u; i < HS; i++) {
                fwd_acc[i * WG + li] = fma(e, fwd_kv[v + i], fwd_acc[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        let o = r.out + r.t * fwd_p.c;
        var inv = 0.0;  // a row with no visible key: out = 0 (its acc is 0)
        var lse = LOWEST;
        if (l > 0.0) {
            inv = 1.0 / l;
            lse = m + log(l);
        }
        for (var i = 0u; i < HS; i++) { fwd_out[o + i] = fwd_acc[i * WG + li] * inv; }
        fwd_stats[r.bh * fwd_p.tq + r.t] = lse;
    }
}

// ---------------------------------------------------------------------------------------
// mha_backward, in two launches. Both ADD into their gradient (+=), like every backward
// kernel: the training step zeroes gradients once per step. With p = exp(s - L_i),
// dp[i, j] = dout_i · v_j and D_i = Σ_c dout_i · out_i (= Σ_j p dp, per head row), over
// visible (i, j) pairs only:
//   ds[i, j] = p (dp - D_i)
//   dq_i += scale Σ_j ds k_j      (mha_backward_dq: one row per query i)
//   dk_j += scale Σ_i ds q_i      (mha_backward_dkv: one row per key j)
//   dv_j +=       Σ_i p dout_i
// mha_backward_dq writes only q's channels of dq (same layout as q) and D_i to delta
// (B, NH, Tq) for mha_backward_dkv, which writes only k's and v's channels of dkv (same
// layout as kv). For self-attention dq and dkv are one tensor, bound once per launch.
// Each invocation owns the dq (resp. dk, dv) elements of its row, so no atomics. Rows with
// no visible key (stats = LOWEST) are never touched: every (i, j) pair of them is hidden.

@group(0) @binding(0) var<storage, read_write> bdq_dq: array<f32>;     // (B, Tq, q_stride), q part
@group(0) @binding(1) var<storage, read_write> bdq_delta: array<f32>;  // (B, NH, Tq) D_i
@group(0) @binding(2) var<storage, read> bdq_dout: array<f32>;         // (B, Tq, C)
@group(0) @binding(3) var<storage, read> bdq_q: array<f32>;            // (B, Tq, q_stride)
@group(0) @binding(4) var<storage, read> bdq_kv: array<f32>;           // (B, Tk, kv_stride)
@group(0) @binding(5) var<storage, read> bdq_out: array<f32>;          // (B, Tq, C)
@group(0) @binding(6) var<storage, read> bdq_stats: array<f32>;        // (B, NH, Tq) L_i
@group(0) @binding(7) var<storage, read> bdq_mask: array<i32>;         // (B, Tk) ≠ 0: padding
@group(0) @binding(8) var<uniform> bdq_p: MhaParams;

var<workgroup> bdq_qs: array<f32, ROW_FLOATS>;   // (HS, WG) each row's query, pre-scaled
var<workgroup> bdq_acc: array<f32, ROW_FLOATS>;  // (HS, WG) Σ ds k, scaled at the end

@compute @workgroup_size(WG)
fn mha_backward_dq(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(bdq_p, bdq_p.tq)) { return; }
    let r = block_of(g, li, bdq_p, bdq_p.tq);
    let HS = bdq_p.hs;
    let stride = bdq_p.kv_stride;
    let k0 = r.kv + bdq_p.k_off;
    let v0 = r.kv + bdq_p.v_off;
    let qt = r.q + r.t * bdq_p.q_stride;  // this row's q in q and dq
    let ot = r.out + r.t * bdq_p.c;       // this row's out and dout
    var d = 0.0;
    for (var i = 0u; i < HS; i++) {
        bdq_qs[i * WG + li] = bdq_q[qt + i] * bdq_p.scale;
        bdq_acc[i * WG + li] = 0.0;
        d = fma(bdq_dout[ot + i], bdq_out[ot + i], d);
    }
    let lse = bdq_stats[r.bh * bdq_p.tq + r.t];
    var kend = bdq_p.tk;
    if (bdq_p.causal != 0u) { kend = r.last + 1u; }
    for (var j = 0u; j < kend; j++) {
        if (bdq_p.has_mask != 0u && bdq_mask[r.mask + j] != 0) { continue; }
        let k = k0 + j * stride;
        let v = v0 + j * stride;
        var s = 0.0;
        var dp = 0.0;
        for (var i = 0u; i < HS; i++) {
            s = fma(bdq_qs[i * WG + li], bdq_kv[k + i], s);
            dp = fma(bdq_dout[ot + i], bdq_kv[v + i], dp);
        }
        if (bdq_p.causal == 0u || j <= r.t) {
            let ds = exp(s - lse) * (dp - d);
            for (var i = 0u; i < HS; i++) {
                bdq_acc[i * WG + li] = fma(ds, bdq_kv[k + i], bdq_acc[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        bdq_delta[r.bh * bdq_p.tq + r.t] = d;
        for (var i = 0u; i < HS; i++) { bdq_dq[qt + i] += bdq_acc[i * WG + li] * bdq_p.scale; }
    }
}

@group(0) @binding(0) var<storage, read_write> bkv_dkv: array<f32>;  // (B, Tk, kv_stride), k and v parts
@group(0) @binding(1) var<storage, read> bkv_dout: array<f32>;       // (B, Tq, C)
@group(0) @binding(2) var<storage, read> bkv_q: array<f32>;          // (B, Tq, q_stride)
@group(0) @binding(3) var<storage, read> bkv_kv: array<f32>;         // (B, Tk, kv_stride)
@group(0) @binding(4) var<storage, read> bkv_stats: array<f32>;      // (B, NH, Tq) L_i
@group(0) @binding(5) var<storage, read> bkv_delta: array<f32>;      // (B, NH, Tq) D_i
@group(0) @binding(6) var<storage, read> bkv_mask: array<i32>;       // (B, Tk) ≠ 0: padding
@group(0) @binding(7) var<uniform> bkv_p: MhaParams;

var<workgroup> bkv_dk: array<f32, ROW_FLOATS>;  // (HS, WG) Σ ds q, scaled at the end
var<workgroup> bkv_dv: array<f32, ROW_FLOATS>;  // (HS, WG) Σ p dout

@compute @workgroup_size(WG)
fn mha_backward_dkv(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(bkv_p, bkv_p.tk)) { return; }
    let r = block_of(g, li, bkv_p, bkv_p.tk);  // here the block's positions are keys j
    let HS = bkv_p.hs;
    let kt = r.kv + bkv_p.k_off + r.t * bkv_p.kv_stride;  // this row's k in kv and dkv
    let vt = r.kv + bkv_p.v_off + r.t * bkv_p.kv_stride;  // and its v
    for (var i = 0u; i < HS; i++) {
        bkv_dk[i * WG + li] = 0.0;
        bkv_dv[i * WG + li] = 0.0;
    }
    // A padded key is hidden from every query: its row only accumulates zeros.
    let padded = bkv_p.has_mask != 0u && bkv_mask[r.mask + r.t] != 0;
    // Queries of the same head, in order (when causal, those from t0 on: earlier ones
    // see none of the block's keys); each row takes the queries its key is visible to.
    var q0 = 0u;
    if (bkv_p.causal != 0u) { q0 = r.t0; }
    for (var tq = q0; tq < bkv_p.tq; tq++) {
        let q = r.q + tq * bkv_p.q_stride;
        let o = r.out + tq * bkv_p.c;
        var s = 0.0;
        var dp = 0.0;
        for (var i = 0u; i < HS; i++) {
            s = fma(bkv_q[q + i] * bkv_p.scale, bkv_kv[kt + i], s);
            dp = fma(bkv_dout[o + i], bkv_kv[vt + i], dp);
        }
        if (!padded && (bkv_p.causal == 0u || tq >= r.t)) {
            let row = r.bh * bkv_p.tq + tq;
            let p = exp(s - bkv_stats[row]);
            let ds = p * (dp - bkv_delta[row]);
            for (var i = 0u; i < HS; i++) {
                bkv_dk[i * WG + li] = fma(ds, bkv_q[q + i], bkv_dk[i * WG + li]);
                bkv_dv[i * WG + li] = fma(p, bkv_dout[o + i], bkv_dv[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        for (var i = 0u; i < HS; i++) {
            bkv_dkv[kt + i] += bkv_dk[i * WG + li] * bkv_p.scale;
            bkv_dkv[vt + i] += bkv_dv[i * WG + li];
        }
    }
}
