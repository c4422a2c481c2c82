// sampling.wgsl: what generation needs from the last position's logits (B, V):
//   softmax_forward  probs = softmax(logits / temperature), per row
//   argmax_forward   indices[b] = the column of row b's largest logit
//   topk_forward     values, indices (B, K) = row b's K largest logits, sorted descending
//   sample_forward   indices[b] = a token drawn from row b after temperature, top-k and
//                    top-p, with a counter-based random number: only the id is written
// Ties go to the lowest index everywhere: rows are ordered by (value descending, index
// ascending), a total order on non-NaN values, so results are deterministic. -inf logits
// are ordinary values (probability 0, picked last). NaN logits give unspecified results.
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
const LOWEST: f32 = -3.4028234663852886e38;  // -f32::MAX, exactly (Tint rejects a rounded literal)
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

// ---- sampling a token ----
// Per row, with x the logits and settings S (a storage buffer the host rewrites before
// each submit, so one recorded launch serves every request and every step):
//   S.temperature == 0: the argmax, as argmax_forward.
//   Otherwise p_i ∝ exp((x_i - max x) / S.temperature) over the kept columns:
//   top-k (0 < S.top_k < V): keep x_i >= the K-th largest logit (every tie of it);
//   top-p (S.top_p < 1): of those, keep x_i >= u*, the largest threshold whose kept
//     probability is still >= S.top_p (the fewest largest columns reaching top_p, every
//     tie of the last one), as Hugging Face's TopPLogitsWarper up to ties.
//   Draw r = U·Z, Z the kept mass, U in [0, 1) from (S.seed, S.counter) by a counter-based
//   hash (uniform_draw); the pick is the first kept column, in index order, whose
//   cumulative mass exceeds r.
// Thresholds are found on order-preserving u32 keys of the logits, 4 bits at a time from
// the top (sp_select: 8 passes over the row, each a 16-bin histogram per invocation, of
// counts or of masses, folded by a fixed tree), so they are deterministic. Counts are
// exact (f32 integers); masses are f32 sums, so a column whose mass sits within rounding
// of the top-p boundary may be kept or not, unlike an f64 computation. The draw sums
// contiguous blocks of columns, one per invocation, scans the WG block sums in order on
// one invocation, and lets the block holding r find the column.

// Mirrored by `SampleSettings` in src/kernels/sampling.rs.
struct SampleSettings {
    temperature: f32,  // 0: greedy; otherwise the logits are divided by it
    top_k: u32,        // keep the K largest logits (all ties of the K-th); 0 or ≥ V: off
    top_p: f32,        // nucleus mass in (0, 1]; 1: off
    seed_lo: u32,      // the seed's low word
    seed_hi: u32,      // the seed's high word
    counter: u32,      // index of the draw: each (seed, counter) gives its own U
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> sp_indices: array<u32>;        // (B)
@group(0) @binding(1) var<storage, read> sp_logits: array<f32>;               // (rows, V): this chunk
@group(0) @binding(2) var<storage, read> sp_settings: array<SampleSettings>;  // (B)
@group(0) @binding(3) var<uniform> sp_p: SamplingParams;

var<workgroup> sp_scan: array<f32, WG>;  // exclusive prefix sums of the block masses
var<workgroup> sp_hist: array<f32, 2048>;  // (16 bins, WG / 2): histograms being folded
var<workgroup> sp_owner: u32;            // invocation whose block holds r
var<workgroup> sp_r: f32;                // r = U·Z

// A u32 that orders like the f32 x: negative values flipped, positive ones offset.
fn order_key(x: f32) -> u32 {
    let u = bitcast<u32>(x);
    if ((u & 0x80000000u) != 0u) { return ~u; }
    return u | 0x80000000u;
}

// PCG's output permutation as a hash (Jarzynski & Olano, "Hash Functions for GPU
// Rendering", 2020). Mirrored by `pcg_hash` in src/reference/sampling.rs.
fn pcg_hash(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// U in [0, 1) with 24 random bits, a function of (seed, counter) alone.
fn uniform_draw(seed_lo: u32, seed_hi: u32, counter: u32) -> f32 {
    let h = pcg_hash(pcg_hash(pcg_hash(counter) ^ seed_lo) ^ seed_hi);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// Tree reductions over the workgroup, result returned to every invocation. Must be called
// in uniform control flow.
fn sp_sum_f32(li: u32, x: f32) -> f32 {
    red_x[li] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) { red_x[li] += red_x[li + stride]; }
        workgroupBarrier();
    }
    let r = red_x[0];
    workgroupBarrier();
    return r;
}

fn sp_max_f32(li: u32, x: f32) -> f32 {
    red_v[li] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) { red_v[li] = max(red_v[li], red_v[li + stride]); }
        workgroupBarrier();
    }
    let r = red_v[0];
    workgroupBarrier();
    return r;
}

// Unnormalised probability of logit x: exp((x - xmax) / temperature).
fn sp_weight(x: f32, xmax: f32, temperature: f32) -> f32 {
    return exp((x - xmax) / temperature);
}

// Σ of sp_weight over the row's columns whose key is >= `key`, by a fixed tree.
fn sp_mass(li: u32, base: u32, key: u32, xmax: f32, temperature: f32) -> f32 {
    var m = 0.0;
    for (var i = li; i < sp_p.v; i += WG) {
        let x = sp_logits[base + i];
        if (order_key(x) >= key) { m += sp_weight(x, xmax, temperature); }
    }
    return sp_sum_f32(li, m);
}

// The largest key u such that the columns with key >= max(u, floor) weigh at least
// `goal`, where a column weighs 1 (count) or, with `use_mass`, sp_weight. Built 4 bits
// at a time from the top: for each digit, every invocation histograms the digit of its
// columns that share the digits chosen so far, the histograms are folded by a fixed tree,
// and the largest digit whose columns (with those of larger prefixes, `above`) still
// weigh `goal` is taken. Must be called in uniform control flow.
fn sp_select(li: u32, base: u32, floor: u32, goal: f32, use_mass: bool,
             xmax: f32, temperature: f32) -> u32 {
    var prefix = 0u;
    var above = 0.0;  // weight of the columns whose chosen digits exceed prefix's
    for (var j = 0u; j < 8u; j++) {
        let shift = 28u - 4u * j;
        let mask = ~((16u << shift) - 1u);  // the digits above this one (none for j = 0)
        var hist: array<f32, 16>;
        for (var d = 0u; d < 16u; d++) { hist[d] = 0.0; }
        for (var i = li; i < sp_p.v; i += WG) {
            let x = sp_logits[base + i];
            let key = order_key(x);
            if ((key & mask) == (prefix & mask) && key >= floor) {
                var w = 1.0;
                if (use_mass) { w = sp_weight(x, xmax, temperature); }
                let d = (key >> shift) & 15u;
                hist[d] += w;
            }
        }
        // Fold the WG histograms: the upper half into the lower, then a tree over WG / 2.
        let half = WG / 2u;
        if (li >= half) {
            for (var d = 0u; d < 16u; d++) { sp_hist[d * half + li - half] = hist[d]; }
        }
        workgroupBarrier();
        if (li < half) {
            for (var d = 0u; d < 16u; d++) { sp_hist[d * half + li] += hist[d]; }
        }
        workgroupBarrier();
        for (var stride = half / 2u; stride > 0u; stride >>= 1u) {
            for (var item = li; item < 16u * stride; item += WG) {
                let at = (item / stride) * half + item % stride;
                sp_hist[at] += sp_hist[at + stride];
            }
            workgroupBarrier();
        }
        var acc = above;
        var chosen = 0u;
        var chosen_above = above;
        var found = false;
        for (var k = 0u; k < 16u; k++) {
            let d = 15u - k;
            let with_d = acc + sp_hist[d * half];
            if (!found && with_d >= goal) {
                chosen = d;
                chosen_above = acc;
                found = true;
            }
            acc = with_d;
        }
        workgroupBarrier();  // every invocation has read the bins before the next fold
        prefix |= chosen << shift;
        above = chosen_above;
    }
    return max(prefix, floor);
}

@compute @workgroup_size(WG)
fn sample_forward(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= sp_p.rows) { return; }
    let v = sp_p.v;
    let base = row * v;
    let out = sp_p.row_offset + row;
    let st = sp_settings[out];

    if (st.temperature <= 0.0) {  // greedy: argmax_forward's rule
        var bv = 0.0;
        var bi = NONE;
        for (var i = li; i < v; i += WG) {
            let x = sp_logits[base + i];
            if (bi == NONE || x > bv) {
                bv = x;
                bi = i;
            }
        }
        let best = best_of_row(li, bv, bi);
        if (li == 0u) { sp_indices[out] = best; }
        return;
    }

    var mx = LOWEST;
    for (var i = li; i < v; i += WG) { mx = max(mx, sp_logits[base + i]); }
    let xmax = sp_max_f32(li, mx);

    // top-k: the largest key with at least K columns at or above it (the K-th largest).
    var kth = 0u;
    if (st.top_k > 0u && st.top_k < v) {
        kth = sp_select(li, base, 0u, f32(st.top_k), false, xmax, st.temperature);
    }
    // top-p: the largest key u >= kth whose columns at or above it still hold top_p of
    // the mass top-k keeps.
    var cut = kth;
    if (st.top_p < 1.0) {
        let goal = st.top_p * sp_mass(li, base, kth, xmax, st.temperature);
        cut = sp_select(li, base, kth, goal, true, xmax, st.temperature);
    }

    // The draw: invocation li sums the contiguous block [lo, hi) of kept columns.
    let per = (v + WG - 1u) / WG;
    let lo = min(li * per, v);
    let hi = min(lo + per, v);
    var part = 0.0;
    for (var i = lo; i < hi; i++) {
        let x = sp_logits[base + i];
        if (order_key(x) >= cut) { part += sp_weight(x, xmax, st.temperature); }
    }
    red_x[li] = part;
    workgroupBarrier();
    if (li == 0u) {
        var acc = 0.0;
        for (var j = 0u; j < WG; j++) {
            sp_scan[j] = acc;
            acc += red_x[j];
        }
        let r = uniform_draw(st.seed_lo, st.seed_hi, st.counter) * acc;
        // The last block with mass that starts at or below r (the max's block qualifies).
        var owner = 0u;
        for (var j = 0u; j < WG; j++) {
            if (red_x[j] > 0.0 && sp_scan[j] <= r) { owner = j; }
        }
        sp_owner = owner;
        sp_r = r;
    }
    workgroupBarrier();
    if (li == sp_owner) {
        let r = sp_r;
        var acc = sp_scan[li];
        var pick = NONE;
        var last = NONE;  // the block's last column with mass: the pick if rounding left r past the end
        for (var i = lo; i < hi; i++) {
            let x = sp_logits[base + i];
            if (order_key(x) >= cut) {
                let e = sp_weight(x, xmax, st.temperature);
                if (e > 0.0) {
                    last = i;
                    if (pick == NONE && acc + e > r) { pick = i; }
                    acc += e;
                }
            }
        }
        if (pick == NONE) { pick = last; }
        sp_indices[out] = pick;
    }
}
