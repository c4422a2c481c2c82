// attention.wgsl: causal multi-head self-attention as in GPT-2, forward and backward.
//
// qkv (B, T, 3C) holds q, k, v at channel offsets 0, C, 2C of each row; head h uses
// channels [h·HS, (h+1)·HS). For a query row t of head h:
//   s[t'] = q_t · k_t' · scale   (t' ≤ t, scale = 1/√HS)
//   p[t'] = softmax over t' of s
//   out_t = Σ_t' p[t'] v_t'      written to out (B, T, C), heads concatenated
// Only the row's log-sum-exp L_t = log Σ_t' exp(s[t']) is saved (stats, (B, NH, T));
// backward recomputes p = exp(s - L_t), so memory never grows as T².
//
// One invocation owns one (b, h, t) row; a workgroup holds WG consecutive positions of
// one head, so all its invocations walk the same keys (forward, dq) or queries (dk, dv)
// in the same order and read them at the same addresses; the causal mask is a branch
// inside that shared loop. The grid is 1-D over (b·NH + h, block of WG positions),
// folded by the scheduler when wide (see linear_workgroup). Keys, values and queries
// are read from global memory by every workgroup: a flash-style version that stages
// tiles in workgroup memory is later work. Every loop runs in a fixed order, so results
// are the same bits run after run.
//
// CPU adapters with subgroups take the matmul form at the end of this file instead.
// Per-row vectors (the query, the accumulators) live in workgroup memory, one column
// per invocation: element i of invocation li at [i·WG + li]. Private arrays would be
// zero-initialised on every invocation and made lavapipe's compile take seconds.
// Each entry point uses at most two such arrays of ROW_FLOATS (8 KiB each, 16 KiB in
// all), so WG·HS ≤ ROW_FLOATS: the launcher picks WG = min(64, T rounded up to a power
// of two, the largest power of two with WG·HS ≤ ROW_FLOATS) and sets it as the override
// constant WG. HS itself is a params field, so one pipeline per WG serves every head
// size. Launchers: src/kernels/attention.rs. CPU references: src/reference/attention.rs.

struct AttentionParams {
    b: u32,      // batch rows in this launch (a chunk of B)
    t: u32,      // sequence length T
    c: u32,      // channels C = NH·HS
    nh: u32,     // heads NH
    hs: u32,     // head size HS = C / NH, with WG·HS ≤ ROW_FLOATS
    scale: f32,  // 1/√HS, computed in f64 on the host
}

const ROW_FLOATS: u32 = 2048u;  // floats of one per-row workgroup array: (HS, WG)
override WG: u32 = 64u;         // positions of one head per workgroup

// The workgroup's head and block of positions, and this invocation's position in it.
struct Block {
    bh: u32,    // b·NH + h: the head's index among all heads; its stats rows start at bh·T
    t0: u32,    // first position of the block
    last: u32,  // last position of the block, min(t0 + WG, T) - 1
    t: u32,     // this invocation's position, clamped to last (lanes past T write nothing)
    qkv: u32,   // index in qkv of q[0] at position 0 of this batch and head
    out: u32,   // index in out of out[0] at position 0 of this batch and head
}

// Workgroup g of the 1-D grid (g < workgroups(p)) is head g / blocks, block g % blocks.
fn block_of(g: u32, li: u32, p: AttentionParams) -> Block {
    let blocks = (p.t + WG - 1u) / WG;
    let bh = g / blocks;
    let t0 = (g % blocks) * WG;
    let last = min(t0 + WG, p.t) - 1u;
    let h = bh % p.nh;
    let b = bh / p.nh;
    return Block(bh, t0, last, min(t0 + li, last),
                 b * p.t * 3u * p.c + h * p.hs, b * p.t * p.c + h * p.hs);
}

// B·NH·blocks; a folded grid has a few spare workgroups past it, which return at once.
fn workgroups(p: AttentionParams) -> u32 {
    return p.b * p.nh * ((p.t + WG - 1u) / WG);
}

// ---------------------------------------------------------------------------------------
// attention_forward: out (B, T, C) = softmax(q·kᵀ·scale, causal) · v; stats = L per row.

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;    // (B, T, C)
@group(0) @binding(1) var<storage, read_write> fwd_stats: array<f32>;  // (B, NH, T) log-sum-exp
@group(0) @binding(2) var<storage, read> fwd_qkv: array<f32>;          // (B, T, 3C)
@group(0) @binding(3) var<uniform> fwd_p: AttentionParams;

var<workgroup> fwd_q: array<f32, ROW_FLOATS>;    // (HS, WG) each row's query, pre-scaled
var<workgroup> fwd_acc: array<f32, ROW_FLOATS>;  // (HS, WG) Σ exp(s - m) v so far

@compute @workgroup_size(WG)
fn attention_forward(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(fwd_p)) { return; }
    let r = block_of(g, li, fwd_p);
    let HS = fwd_p.hs;
    let C = fwd_p.c;
    let stride = 3u * C;  // between consecutive positions in qkv
    let k0 = r.qkv + C;   // k at position 0; position t' at k0 + t'·stride, v at + C
    let qt = r.qkv + r.t * stride;
    for (var i = 0u; i < HS; i++) { fwd_q[i * WG + li] = fwd_qkv[qt + i] * fwd_p.scale; }

    // Online softmax: m is the running max of s, l = Σ exp(s - m). Key 0 is in every
    // row's causal window, so it starts the recurrence and no infinity is ever needed.
    var m = 0.0;
    for (var i = 0u; i < HS; i++) { m = fma(fwd_q[i * WG + li], fwd_qkv[k0 + i], m); }
    var l = 1.0;
    for (var i = 0u; i < HS; i++) { fwd_acc[i * WG + li] = fwd_qkv[k0 + C + i]; }
    for (var tk = 1u; tk <= r.last; tk++) {
        let k = k0 + tk * stride;
        var s = 0.0;
        for (var i = 0u; i < HS; i++) { s = fma(fwd_q[i * WG + li], fwd_qkv[k + i], s); }
        if (tk <= r.t) {  // causal mask: the loop is the block's, the row ends at t
            if (s > m) {
                let rescale = exp(m - s);
                l *= rescale;
                for (var i = 0u; i < HS; i++) { fwd_acc[i * WG + li] *= rescale; }
                m = s;
            }
            let e = exp(s - m);
            l += e;
            for (var i = 0u; i < HS; i++) {
                fwd_acc[i * WG + li] = fma(e, fwd_qkv[k + C + i], fwd_acc[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        let inv = 1.0 / l;
        let o = r.out + r.t * C;
        for (var i = 0u; i < HS; i++) { fwd_out[o + i] = fwd_acc[i * WG + li] * inv; }
        fwd_stats[r.bh * fwd_p.t + r.t] = m + log(l);
    }
}

// ---------------------------------------------------------------------------------------
// attention_backward, in two launches. Both ADD into dqkv (+=), like every backward
// kernel: the training step zeroes gradients once per step. With p = exp(s - L_t),
// dp[t, t'] = dout_t · v_t' and D_t = Σ_c dout_t · out_t (= Σ_t' p dp, per head row):
//   ds[t, t'] = p (dp - D_t)
//   dq_t  += scale Σ_{t' ≤ t} ds k_t'      (attention_backward_dq: one row per query t)
//   dk_t' += scale Σ_{t ≥ t'} ds q_t       (attention_backward_dkv: one row per key t')
//   dv_t' +=       Σ_{t ≥ t'} p dout_t
// attention_backward_dq also writes D_t to delta (B, NH, T) for attention_backward_dkv.
// Each invocation owns the dq (resp. dk, dv) elements of its row, so no atomics.

@group(0) @binding(0) var<storage, read_write> bdq_dqkv: array<f32>;   // (B, T, 3C), q part
@group(0) @binding(1) var<storage, read_write> bdq_delta: array<f32>;  // (B, NH, T) D_t
@group(0) @binding(2) var<storage, read> bdq_dout: array<f32>;         // (B, T, C)
@group(0) @binding(3) var<storage, read> bdq_qkv: array<f32>;          // (B, T, 3C)
@group(0) @binding(4) var<storage, read> bdq_out: array<f32>;          // (B, T, C)
@group(0) @binding(5) var<storage, read> bdq_stats: array<f32>;        // (B, NH, T) L_t
@group(0) @binding(6) var<uniform> bdq_p: AttentionParams;

var<workgroup> bdq_q: array<f32, ROW_FLOATS>;   // (HS, WG) each row's query, pre-scaled
var<workgroup> bdq_dq: array<f32, ROW_FLOATS>;  // (HS, WG) Σ ds k, scaled at the end

@compute @workgroup_size(WG)
fn attention_backward_dq(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(bdq_p)) { return; }
    let r = block_of(g, li, bdq_p);
    let HS = bdq_p.hs;
    let C = bdq_p.c;
    let stride = 3u * C;
    let k0 = r.qkv + C;
    let qt = r.qkv + r.t * stride;  // this row's q in qkv and dqkv
    let ot = r.out + r.t * C;       // this row's out and dout
    var d = 0.0;
    for (var i = 0u; i < HS; i++) {
        bdq_q[i * WG + li] = bdq_qkv[qt + i] * bdq_p.scale;
        bdq_dq[i * WG + li] = 0.0;
        d = fma(bdq_dout[ot + i], bdq_out[ot + i], d);
    }
    let lse = bdq_stats[r.bh * bdq_p.t + r.t];
    for (var tk = 0u; tk <= r.last; tk++) {
        let k = k0 + tk * stride;
        var s = 0.0;
        var dp = 0.0;
        for (var i = 0u; i < HS; i++) {
            s = fma(bdq_q[i * WG + li], bdq_qkv[k + i], s);
            dp = fma(bdq_dout[ot + i], bdq_qkv[k + C + i], dp);
        }
        if (tk <= r.t) {
            let ds = exp(s - lse) * (dp - d);
            for (var i = 0u; i < HS; i++) {
                bdq_dq[i * WG + li] = fma(ds, bdq_qkv[k + i], bdq_dq[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        bdq_delta[r.bh * bdq_p.t + r.t] = d;
        for (var i = 0u; i < HS; i++) { bdq_dqkv[qt + i] += bdq_dq[i * WG + li] * bdq_p.scale; }
    }
}

@group(0) @binding(0) var<storage, read_write> bkv_dqkv: array<f32>;  // (B, T, 3C), k and v parts
@group(0) @binding(1) var<storage, read> bkv_dout: array<f32>;        // (B, T, C)
@group(0) @binding(2) var<storage, read> bkv_qkv: array<f32>;         // (B, T, 3C)
@group(0) @binding(3) var<storage, read> bkv_stats: array<f32>;       // (B, NH, T) L_t
@group(0) @binding(4) var<storage, read> bkv_delta: array<f32>;       // (B, NH, T) D_t
@group(0) @binding(5) var<uniform> bkv_p: AttentionParams;

var<workgroup> bkv_dk: array<f32, ROW_FLOATS>;  // (HS, WG) Σ ds q, scaled at the end
var<workgroup> bkv_dv: array<f32, ROW_FLOATS>;  // (HS, WG) Σ p dout

@compute @workgroup_size(WG)
fn attention_backward_dkv(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let g = linear_workgroup(wg, nwg);
    if (g >= workgroups(bkv_p)) { return; }
    let r = block_of(g, li, bkv_p);  // here the block's positions are keys t'
    let HS = bkv_p.hs;
    let T = bkv_p.t;
    let C = bkv_p.c;
    let stride = 3u * C;
    let kt = r.qkv + C + r.t * stride;  // this row's k in qkv and dqkv; v at + C
    for (var i = 0u; i < HS; i++) {
        bkv_dk[i * WG + li] = 0.0;
        bkv_dv[i * WG + li] = 0.0;
    }
    // Queries t ≥ t0 of the same head, in order; each row takes those t ≥ its own t'.
    for (var tq = r.t0; tq < T; tq++) {
        let q = r.qkv + tq * stride;
        let o = r.out + tq * C;
        var s = 0.0;
        var dp = 0.0;
        for (var i = 0u; i < HS; i++) {
            s = fma(bkv_qkv[q + i] * bkv_p.scale, bkv_qkv[kt + i], s);
            dp = fma(bkv_dout[o + i], bkv_qkv[kt + C + i], dp);
        }
        if (tq >= r.t) {
            let row = r.bh * T + tq;
            let p = exp(s - bkv_stats[row]);
            let ds = p * (dp - bkv_delta[row]);
            for (var i = 0u; i < HS; i++) {
                bkv_dk[i * WG + li] = fma(ds, bkv_qkv[q + i], bkv_dk[i * WG + li]);
                bkv_dv[i * WG + li] = fma(p, bkv_dout[o + i], bkv_dv[i * WG + li]);
            }
        }
    }
    if (r.t0 + li <= r.last) {
        for (var i = 0u; i < HS; i++) {
            bkv_dqkv[kt + i] += bkv_dk[i * WG + li] * bkv_p.scale;
            bkv_dqkv[kt + C + i] += bkv_dv[i * WG + li];
        }
    }
}

// ---------------------------------------------------------------------------------------
// The matmul form, for CPU adapters with subgroups (src/kernels/attention.rs picks it):
// there the per-head products run fastest as batched matmuls (matmul_forward_subgroup),
// with the T×T scores of every head in a scratch tensor att (B, NH, T, T), so these two
// kernels do only the softmax between them. One invocation owns one row (b, h, t) of att,
// row index r = (b·NH + h)·T + t, the same index as stats. On GPUs, where an invocation
// per row reads T floats apart from its neighbours, the `_rows` entries run instead: one
// workgroup of SM_LANES invocations per row, each taking the row's columns li,
// li + SM_LANES, …, with the max and the sums added by a fixed tree (on an H200, a
// slice of 24 heads at T = 1024: 0.64 → 0.10 ms forward, 0.63 → 0.08 ms backward).
//   attention_softmax_forward:  att = s (q·kᵀ, unscaled) → p = exp(s·scale - L), zero
//     past t (causal); L = log Σ exp(s·scale) is written to stats, or, with RECOMPUTE
//     (the backward pass rebuilding p), read from it.
//   attention_softmax_backward: datt = dp (dout·vᵀ) → ds·scale = p (dp - D)·scale, with
//     D = Σ p·dp; the scale is folded in here so that dq and dk are plain products.

override RECOMPUTE: bool = false;

@group(0) @binding(0) var<storage, read_write> smf_att: array<f32>;    // (B, NH, T, T)
@group(0) @binding(1) var<storage, read_write> smf_stats: array<f32>;  // (B, NH, T) L
@group(0) @binding(2) var<uniform> smf_p: AttentionParams;

@compute @workgroup_size(64)
fn attention_softmax_forward(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    let r = linear_workgroup(wg, nwg) * 64u + li;
    let T = smf_p.t;
    if (r >= smf_p.b * smf_p.nh * T) { return; }
    let t = r % T;
    let row = r * T;
    var lse: f32;
    if (RECOMPUTE) {
        lse = smf_stats[r];
    } else {
        var m = smf_att[row] * smf_p.scale;
        for (var j = 1u; j <= t; j++) { m = max(m, smf_att[row + j] * smf_p.scale); }
        var l = 0.0;
        for (var j = 0u; j <= t; j++) { l += exp(smf_att[row + j] * smf_p.scale - m); }
        lse = m + log(l);
        smf_stats[r] = lse;
    }
    for (var j = 0u; j < T; j++) {
        var v = 0.0;
        if (j <= t) { v = exp(smf_att[row + j] * smf_p.scale - lse); }
        smf_att[row + j] = v;
    }
}

@group(0) @binding(0) var<storage, read_write> smb_datt: array<f32>;  // (B, NH, T, T) dp → ds·scale
@group(0) @binding(1) var<storage, read> smb_att: array<f32>;         // (B, NH, T, T) p
@group(0) @binding(2) var<uniform> smb_p: AttentionParams;

@compute @workgroup_size(64)
fn attention_softmax_backward(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let r = linear_workgroup(wg, nwg) * 64u + li;
    let T = smb_p.t;
    if (r >= smb_p.b * smb_p.nh * T) { return; }
    let t = r % T;
    let row = r * T;
    var d = 0.0;
    for (var j = 0u; j <= t; j++) { d = fma(smb_att[row + j], smb_datt[row + j], d); }
    for (var j = 0u; j < T; j++) {
        var v = 0.0;
        if (j <= t) { v = smb_att[row + j] * (smb_datt[row + j] - d) * smb_p.scale; }
        smb_datt[row + j] = v;
    }
}

// ---- the `_rows` forms: one workgroup per row of att ------------------------------------

const SM_LANES: u32 = 128u;
var<workgroup> sm_red: array<f32, SM_LANES>;

// The max (is_max) or the sum of `v` over the workgroup's SM_LANES invocations, by a fixed
// tree. Must be called in uniform control flow; every invocation gets the result.
fn sm_reduce(li: u32, v: f32, is_max: bool) -> f32 {
    sm_red[li] = v;
    workgroupBarrier();
    for (var s = SM_LANES / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            if (is_max) {
                sm_red[li] = max(sm_red[li], sm_red[li + s]);
            } else {
                sm_red[li] += sm_red[li + s];
            }
        }
        workgroupBarrier();
    }
    let total = sm_red[0];
    workgroupBarrier();  // sm_red is reused by the next call
    return total;
}

// attention_softmax_forward, a workgroup per row r = linear workgroup index.
@compute @workgroup_size(SM_LANES)
fn attention_softmax_forward_rows(@builtin(workgroup_id) wg: vec3<u32>,
                                  @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) li: u32) {
    let r = linear_workgroup(wg, nwg);
    let T = smf_p.t;
    if (r >= smf_p.b * smf_p.nh * T) { return; }  // the whole workgroup
    let t = r % T;
    let row = r * T;
    var lse: f32;
    if (RECOMPUTE) {
        lse = smf_stats[r];
    } else {
        // Column 0 is always in the row (j ≤ t), so the max is finite.
        var m = smf_att[row] * smf_p.scale;
        for (var j = li; j <= t; j += SM_LANES) { m = max(m, smf_att[row + j] * smf_p.scale); }
        m = sm_reduce(li, m, true);
        var l = 0.0;
        for (var j = li; j <= t; j += SM_LANES) { l += exp(smf_att[row + j] * smf_p.scale - m); }
        l = sm_reduce(li, l, false);
        lse = m + log(l);
        if (li == 0u) { smf_stats[r] = lse; }
    }
    for (var j = li; j < T; j += SM_LANES) {
        var v = 0.0;
        if (j <= t) { v = exp(smf_att[row + j] * smf_p.scale - lse); }
        smf_att[row + j] = v;
    }
}

// attention_softmax_backward, a workgroup per row.
@compute @workgroup_size(SM_LANES)
fn attention_softmax_backward_rows(@builtin(workgroup_id) wg: vec3<u32>,
                                   @builtin(num_workgroups) nwg: vec3<u32>,
                                   @builtin(local_invocation_index) li: u32) {
    let r = linear_workgroup(wg, nwg);
    let T = smb_p.t;
    if (r >= smb_p.b * smb_p.nh * T) { return; }  // the whole workgroup
    let t = r % T;
    let row = r * T;
    var d = 0.0;
    for (var j = li; j <= t; j += SM_LANES) { d = fma(smb_att[row + j], smb_datt[row + j], d); }
    d = sm_reduce(li, d, false);
    for (var j = li; j < T; j += SM_LANES) {
        var v = 0.0;
        if (j <= t) { v = smb_att[row + j] * (smb_datt[row + j] - d) * smb_p.scale; }
        smb_datt[row + j] = v;
    }
}
