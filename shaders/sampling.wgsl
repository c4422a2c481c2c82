// sampling.wgsl: what generation needs from the last position's logits (B, V):
//   softmax_forward  probs = softmax(logits / temperature), per row
//   argmax_forward   indices[b] = the column of row b's largest logit
//   topk_forward     values, indices (B, K) = row b's K largest logits, sorted descending
// Ties go to the lowest index everywhere: rows are ordered by (value descending, index
// ascending), a total order on non-NaN values, so results are deterministic. -inf logits
// are ordinary values (probability 0, picked last). NaN logits give unspecified results.
// Drawing a token from the probabilities is the caller's; these kernels only rank/normalise.
// One workgroup per row: invocation li walks the columns li, li + WG, ... and a fixed tree
// combines the WG partial results. Launchers bind a chunk of rows of logits (and probs)
// that fits one binding and pass its first row in `row_offset`; indices and values (B, K)
// are bound whole.
// Launchers: src/kernels/sampling.rs. CPU references: src/reference/sampling.rs.

struct SamplingParams {
    v: u32,             // V: elements per row of logits
    rows: u32,          // rows of logits in this launch's chunk
    row_offset: u32,    // index among all B rows of the chunk's first row
    k: u32,             // K: entries per row of topk_forward's outputs
    temperature: f32,   // softmax_forward divides logits by it (> 0)
}

const WG: u32 = 256u;
// Start of a running max: finite, so exp(-inf - LOWEST) = 0 and merging two empty parts
// gives exp(0)·0 = 0, never NaN.
const LOWEST: f32 = -3.40282347e38;
// Index of "no candidate" (an invocation with no column left).
const NONE: u32 = 0xffffffffu;

var<workgroup> red_v: array<f32, WG>;  // softmax: running max; argmax/topk: candidate value
var<workgroup> red_x: array<f32, WG>;  // softmax: Σ exp(x - red_v)
var<workgroup> red_i: array<u32, WG>;  // argmax/topk: candidate index, NONE if none

// ---- softmax with temperature ----

@group(0) @binding(0) var<storage, read_write> sm_probs: array<f32>;  // (rows, V): this chunk
@group(0) @binding(1) var<storage, read> sm_logits: array<f32>;       // (rows, V): this chunk
@group(0) @binding(2) var<uniform> sm_p: SamplingParams;

@compute @workgroup_size(WG)
fn softmax_forward(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= sm_p.rows) { return; }
    let v = sm_p.v;
    let base = row * v;
    // Running (max, Σ exp(y - max)) of y = x / temperature over this invocation's columns.
    var m = LOWEST;
    var s = 0.0;
    for (var i = li; i < v; i += WG) {
        let y = sm_logits[base + i] / sm_p.temperature;
        if (y > m) {
            s = s * exp(m - y) + 1.0;
            m = y;
        } else {
            s += exp(y - m);
        }
    }
    red_v[li] = m;
    red_x[li] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            let ma = red_v[li];
            let mb = red_v[li + stride];
            let mm = max(ma, mb);
            red_x[li] = red_x[li] * exp(ma - mm) + red_x[li + stride] * exp(mb - mm);
            red_v[li] = mm;
        }
        workgroupBarrier();
    }
    let row_max = red_v[0];
    let inv_sum = 1.0 / red_x[0];
    for (var i = li; i < v; i += WG) {
        sm_probs[base + i] = exp(sm_logits[base + i] / sm_p.temperature - row_max) * inv_sum;
    }
}

// Whether candidate (v, i) ranks before (bv, bi): larger value, or equal value and lower
// index. A NONE candidate ranks after everything.
fn ranks_before(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    if (i == NONE) { return false; }
    if (bi == NONE) { return true; }
    return v > bv || (v == bv && i < bi);
}

// Tree-combine each invocation's candidate (v, i) into the row's first in rank order,
// returned to every invocation. Must be called in uniform control flow.
fn best_of_row(li: u32, v: f32, i: u32) -> u32 {
    red_v[li] = v;
    red_i[li] = i;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            if (ranks_before(red_v[li + stride], red_i[li + stride], red_v[li], red_i[li])) {
                red_v[li] = red_v[li + stride];
                red_i[li] = red_i[li + stride];
            }
        }
        workgroupBarrier();
    }
    let best = red_i[0];
    workgroupBarrier();  // every invocation has read the result before red_* is reused
    return best;
}

// ---- argmax ----

@group(0) @binding(0) var<storage, read_write> am_indices: array<u32>;  // (B)
@group(0) @binding(1) var<storage, read> am_logits: array<f32>;         // (rows, V): this chunk
@group(0) @binding(2) var<uniform> am_p: SamplingParams;

@compute @workgroup_size(WG)
fn argmax_forward(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= am_p.rows) { return; }
    let v = am_p.v;
    let base = row * v;
    // Columns are visited in increasing order, so a strict > keeps the lowest index of a tie.
    var bv = 0.0;
    var bi = NONE;
    for (var i = li; i < v; i += WG) {
        let x = am_logits[base + i];
        if (bi == NONE || x > bv) {
            bv = x;
            bi = i;
        }
    }
    let best = best_of_row(li, bv, bi);
    if (li == 0u) {
        am_indices[am_p.row_offset + row] = best;
    }
}

// ---- top-k ----
// K rounds of "the best column ranked after the previous pick". Invocation li keeps its
// best column among those ranked after the last pick; a pick invalidates only the
// candidate of the invocation that owned it, so only that one rescans its columns
// (V / WG of them) per round. K is bounded by the launcher (TOPK_MAX_K), not by memory.

@group(0) @binding(0) var<storage, read_write> tk_values: array<f32>;   // (B, K)
@group(0) @binding(1) var<storage, read_write> tk_indices: array<u32>;  // (B, K)
@group(0) @binding(2) var<storage, read> tk_logits: array<f32>;         // (rows, V): this chunk
@group(0) @binding(3) var<uniform> tk_p: SamplingParams;

struct Candidate {
    v: f32,  // logit
    i: u32,  // column, NONE if none
}

// This invocation's best column of the row at `base` among those ranked after the pick
// (pv, pi); with pi == NONE, among all its columns.
fn topk_candidate(base: u32, li: u32, pv: f32, pi: u32) -> Candidate {
    var best = Candidate(0.0, NONE);
    for (var i = li; i < tk_p.v; i += WG) {
        let x = tk_logits[base + i];
        let after = pi == NONE || x < pv || (x == pv && i > pi);
        if (after && (best.i == NONE || x > best.v)) {
            best = Candidate(x, i);
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn topk_forward(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= tk_p.rows) { return; }
    let base = row * tk_p.v;
    let out = (tk_p.row_offset + row) * tk_p.k;
    var cand = topk_candidate(base, li, 0.0, NONE);
    for (var r = 0u; r < tk_p.k; r++) {
        let pi = best_of_row(li, cand.v, cand.i);
        // The pick's value, read back exactly from the row (NaN-free rows always have one).
        var pv = 0.0;
        if (pi != NONE) { pv = tk_logits[base + pi]; }
        if (li == 0u) {
            tk_values[out + r] = pv;
            tk_indices[out + r] = pi;
        }
        if (pi != NONE && pi % WG == li) {
            cand = topk_candidate(base, li, pv, pi);
        }
    }
}
