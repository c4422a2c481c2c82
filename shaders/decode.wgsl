// decode.wgsl: the kernels that run a GPT-2 forward pass over a KV cache, for generation.
// A pass feeds T new positions per batch row (T = 1 for a decode step, a bucket of the
// prompt length for a prefill) starting at the row's position `pos`; only the first `n`
// of the T are real (the rest pad the prompt up to the bucket). `pos` and `n` live in a
// small state buffer (B) the host rewrites before each submit, so one recorded pass
// serves every position. Four entry points:
//   decode_embed      x (B, T, C) = wte[tokens] + wpe[pos + i]; padded rows are zeroed
//   decode_append     k, v of qkv (B, T, 3C) -> the caches (B, NH, maxT, HS) at pos + i
//   decode_attention  out (B, T, C): query i attends to cache positions 0..=pos+i
//   decode_gather     out (B, C) = x[b, n - 1]: the last real row, for the logits
//   decode_logits     logits (B, V) = x (B, C) · wteᵀ: the tied classifier of those rows
// Everything else of the pass (layernorm, matmuls, GELU, residuals) is the training
// kernels', run on (B·T) rows. Padded rows never reach the cache (append skips them),
// attend to nothing (attention writes 0 for them) and are never gathered, so what a
// real row computes does not depend on the bucket. The host keeps pos + n <= maxT.
//
// Cache layout: (B, NH, maxT, HS), so the keys of one head are contiguous rows of HS.
// No float atomics; every reduction runs in a fixed order: the same bits every run.
// Launchers: src/kernels/decode.rs. CPU references: src/reference/decode.rs.

// Mirrored by `DecodeParams` in src/kernels/decode.rs.
struct DecodeParams {
    b: u32,      // batch rows B
    t: u32,      // positions fed per row in this pass (T)
    c: u32,      // channels C = NH·HS
    nh: u32,     // heads NH
    hs: u32,     // head size HS, at most MAX_HS
    max_t: u32,  // positions the cache holds (maxT)
    v: u32,      // vocabulary V: rows of the whole wte (decode_embed)
    row0: u32,   // first wte row of the bound chunk (decode_embed)
    rows: u32,   // wte rows in the bound chunk (decode_embed)
    scale: f32,  // 1/√HS, computed in f64 on the host (decode_attention)
}

// One batch row's place in its sequence. Mirrored by `DecodeRow` in src/kernels/decode.rs.
struct DecodeRow {
    pos: u32,  // position of the pass's first new token
    n: u32,    // real new tokens, 1..=T; rows i >= n are padding
}

const WG: u32 = 64u;        // invocations per workgroup of every entry point
const MAX_HS: u32 = 128u;   // 2·WG: each invocation of decode_attention owns 2 channels
// Start of a running max: finite, so exp(LOWEST - m) is 0, never NaN.
const LOWEST: f32 = -3.4028234663852886e38;  // -f32::MAX, exactly (Tint rejects a rounded literal)

// ---------------------------------------------------------------------------------------
// decode_embed: one invocation per (b, i, c). wte may be bound in row chunks (GPT-2's is
// 147 MiB); a position is written by the launch whose chunk holds its token, and an out
// of range token (the host's to reject) by the first launch, as wpe alone.

@group(0) @binding(0) var<storage, read_write> em_out: array<f32>;  // (B, T, C)
@group(0) @binding(1) var<storage, read> em_tokens: array<i32>;     // (B, T)
@group(0) @binding(2) var<storage, read> em_wte: array<f32>;        // (rows, C): wte[row0..row0+rows]
@group(0) @binding(3) var<storage, read> em_wpe: array<f32>;        // (≥ maxT, C)
@group(0) @binding(4) var<storage, read> em_state: array<DecodeRow>;  // (B)
@group(0) @binding(5) var<uniform> em_p: DecodeParams;

@compute @workgroup_size(WG)
fn decode_embed(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let p = em_p;
    let idx = linear_workgroup(wg, nwg) * WG + li;
    if (idx >= p.b * p.t * p.c) { return; }
    let bi = idx / p.c;
    let ch = idx % p.c;
    let row = em_state[bi / p.t];
    let i = bi % p.t;
    if (i >= row.n) {
        if (p.row0 == 0u) { em_out[idx] = 0.0; }  // padding: a zero row
        return;
    }
    let pos = em_wpe[(row.pos + i) * p.c + ch];
    let token = em_tokens[bi];
    let local = token - i32(p.row0);
    if (token >= 0 && token < i32(p.v) && local >= 0 && local < i32(p.rows)) {
        em_out[idx] = em_wte[u32(local) * p.c + ch] + pos;
    } else if ((token < 0 || token >= i32(p.v)) && p.row0 == 0u) {
        em_out[idx] = pos;
    }
}

// ---------------------------------------------------------------------------------------
// decode_append: one invocation per (b, i, c') over c' in [0, 2C): c' < C copies a key
// channel, c' >= C a value channel, of real row i into position pos + i of the caches.

@group(0) @binding(0) var<storage, read_write> ap_k: array<f32>;  // (B, NH, maxT, HS)
@group(0) @binding(1) var<storage, read_write> ap_v: array<f32>;  // (B, NH, maxT, HS)
@group(0) @binding(2) var<storage, read> ap_qkv: array<f32>;      // (B, T, 3C)
@group(0) @binding(3) var<storage, read> ap_state: array<DecodeRow>;  // (B)
@group(0) @binding(4) var<uniform> ap_p: DecodeParams;

@compute @workgroup_size(WG)
fn decode_append(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let p = ap_p;
    let idx = linear_workgroup(wg, nwg) * WG + li;
    if (idx >= p.b * p.t * 2u * p.c) { return; }
    let bi = idx / (2u * p.c);
    let cc = idx % (2u * p.c);
    let b = bi / p.t;
    let i = bi % p.t;
    let row = ap_state[b];
    let t = row.pos + i;
    if (i >= row.n || t >= p.max_t) { return; }
    let ch = cc % p.c;
    let h = ch / p.hs;
    let d = ch % p.hs;
    let dst = ((b * p.nh + h) * p.max_t + t) * p.hs + d;
    let x = ap_qkv[bi * 3u * p.c + p.c + cc];
    if (cc < p.c) { ap_k[dst] = x; } else { ap_v[dst] = x; }
}

// ---------------------------------------------------------------------------------------
// decode_attention: one workgroup per (b, h, i). Query row i (position pos + i) attends to
// cache positions 0..=pos+i, which decode_append has filled, this pass's rows included.
// The keys are walked in tiles of WG, one key per invocation: scores, the tile's max and
// sum by fixed trees, then an online-softmax update of the output, whose HS channels
// are split over the invocations (channel d belongs to invocation d % WG). Padded rows
// (i >= n) write zeros.

var<workgroup> at_q: array<f32, MAX_HS>;  // the query, pre-scaled
var<workgroup> at_e: array<f32, WG>;      // exp(s - m) of the tile's keys
var<workgroup> at_red: array<f32, WG>;    // tree reductions

@group(0) @binding(0) var<storage, read_write> at_out: array<f32>;  // (B, T, C)
@group(0) @binding(1) var<storage, read> at_qkv: array<f32>;        // (B, T, 3C): q part read
@group(0) @binding(2) var<storage, read> at_k: array<f32>;          // (B, NH, maxT, HS)
@group(0) @binding(3) var<storage, read> at_v: array<f32>;          // (B, NH, maxT, HS)
@group(0) @binding(4) var<storage, read> at_state: array<DecodeRow>;  // (B)
@group(0) @binding(5) var<uniform> at_p: DecodeParams;

// Tree over at_red of WG values: max if `take_max`, else sum; result in at_red[0], read
// by every invocation. Must be called in uniform control flow.
fn at_reduce(li: u32, take_max: bool) -> f32 {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            let a = at_red[li];
            let b = at_red[li + stride];
            if (take_max) { at_red[li] = max(a, b); } else { at_red[li] = a + b; }
        }
        workgroupBarrier();
    }
    let r = at_red[0];
    workgroupBarrier();  // every invocation has read it before at_red is reused
    return r;
}

@compute @workgroup_size(WG)
fn decode_attention(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let p = at_p;
    let g = linear_workgroup(wg, nwg);
    if (g >= p.b * p.nh * p.t) { return; }
    let i = g % p.t;
    let bh = g / p.t;  // b·NH + h
    let b = bh / p.nh;
    let h = bh % p.nh;
    let HS = p.hs;
    let o = (b * p.t + i) * p.c + h * HS;  // this row's head in out
    let row = at_state[b];
    if (i >= row.n) {
        for (var d = li; d < HS; d += WG) { at_out[o + d] = 0.0; }
        return;
    }
    let q = (b * p.t + i) * 3u * p.c + h * HS;
    for (var d = li; d < HS; d += WG) { at_q[d] = at_qkv[q + d] * p.scale; }
    let keys = min(row.pos + i + 1u, p.max_t);  // causal window 0..=pos+i
    let base = bh * p.max_t * HS;  // (b, h) block of the caches

    var m = LOWEST;  // running max of the scores
    var l = 0.0;     // Σ exp(s - m)
    var acc0 = 0.0;  // Σ exp(s - m) v[d] for d = li
    var acc1 = 0.0;  // ... and for d = li + WG
    for (var t0 = 0u; t0 < keys; t0 += WG) {
        workgroupBarrier();  // at_q is written (first tile); at_e is free (later tiles)
        let tk = t0 + li;
        var s = LOWEST;
        if (tk < keys) {
            let k = base + tk * HS;
            s = 0.0;
            for (var d = 0u; d < HS; d++) { s = fma(at_q[d], at_k[k + d], s); }
        }
        at_red[li] = s;
        let m_new = max(m, at_reduce(li, true));
        var e = 0.0;
        if (tk < keys) { e = exp(s - m_new); }
        at_e[li] = e;
        at_red[li] = e;
        let tile_sum = at_reduce(li, false);  // its barriers also publish at_e
        let rescale = exp(m - m_new);
        l = l * rescale + tile_sum;
        acc0 *= rescale;
        acc1 *= rescale;
        let nt = min(WG, keys - t0);
        for (var j = 0u; j < nt; j++) {
            let vrow = base + (t0 + j) * HS;
            let pj = at_e[j];
            if (li < HS) { acc0 = fma(pj, at_v[vrow + li], acc0); }
            if (li + WG < HS) { acc1 = fma(pj, at_v[vrow + li + WG], acc1); }
        }
        m = m_new;
    }
    let inv = 1.0 / l;
    if (li < HS) { at_out[o + li] = acc0 * inv; }
    if (li + WG < HS) { at_out[o + li + WG] = acc1 * inv; }
}

// ---------------------------------------------------------------------------------------
// decode_gather: out[b] = x[b, n - 1], one invocation per (b, c): the last real row of
// each batch row, the only one whose logits generation needs.

@group(0) @binding(0) var<storage, read_write> ga_out: array<f32>;  // (B, C)
@group(0) @binding(1) var<storage, read> ga_x: array<f32>;          // (B, T, C)
@group(0) @binding(2) var<storage, read> ga_state: array<DecodeRow>;  // (B)
@group(0) @binding(3) var<uniform> ga_p: DecodeParams;

@compute @workgroup_size(WG)
fn decode_gather(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let p = ga_p;
    let idx = linear_workgroup(wg, nwg) * WG + li;
    if (idx >= p.b * p.c) { return; }
    let b = idx / p.c;
    let ch = idx % p.c;
    let last = min(max(ga_state[b].n, 1u), p.t) - 1u;
    ga_out[idx] = ga_x[(b * p.t + last) * p.c + ch];
}

// ---------------------------------------------------------------------------------------
// decode_logits: logits[b, v] = Σ_c x[b, c] · wte[v, c]. One invocation per (b, group of
// LOGIT_ROWS consecutive rows v of the bound chunk of wte), summing over c in order with
// one accumulator per row, so each x[b, c] read (the same address across the workgroup)
// serves LOGIT_ROWS products. No workgroup memory and no barrier. It is the tied
// classifier of a decode step's few rows, the largest product of the step (50257×768
// for GPT-2): the general classifier (matmul.wgsl) is tiled and tree-reduced for many
// rows, which software adapters pay for in barriers. wte may be bound in row chunks
// (row0, rows), one launch each, like decode_embed.

const LOGIT_ROWS: u32 = 4u;  // LOGIT_ROWS in src/kernels/decode.rs

@group(0) @binding(0) var<storage, read_write> lg_logits: array<f32>;  // (B, V)
@group(0) @binding(1) var<storage, read> lg_x: array<f32>;             // (B, C)
@group(0) @binding(2) var<storage, read> lg_wte: array<W_T>;           // (rows, C): wte[row0..row0+rows], f32 or f16
@group(0) @binding(3) var<uniform> lg_p: DecodeParams;

@compute @workgroup_size(WG)
fn decode_logits(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let p = lg_p;
    let idx = linear_workgroup(wg, nwg) * WG + li;
    let groups = (p.rows + LOGIT_ROWS - 1u) / LOGIT_ROWS;
    if (idx >= p.b * groups) { return; }
    let b = idx / groups;
    let r0 = (idx % groups) * LOGIT_ROWS;
    // Rows past the chunk repeat its last row; their sums are not stored.
    let w0 = r0 * p.c;
    let w1 = min(r0 + 1u, p.rows - 1u) * p.c;
    let w2 = min(r0 + 2u, p.rows - 1u) * p.c;
    let w3 = min(r0 + 3u, p.rows - 1u) * p.c;
    let x = b * p.c;
    var acc = vec4<f32>(0.0);
    for (var ch = 0u; ch < p.c; ch++) {
        let w = vec4<f32>(f32(lg_wte[w0 + ch]), f32(lg_wte[w1 + ch]), f32(lg_wte[w2 + ch]), f32(lg_wte[w3 + ch]));
        acc = fma(vec4<f32>(lg_x[x + ch]), w, acc);
    }
    let o = b * p.v + p.row0 + r0;
    lg_logits[o] = acc.x;
    if (r0 + 1u < p.rows) { lg_logits[o + 1u] = acc.y; }
    if (r0 + 2u < p.rows) { lg_logits[o + 2u] = acc.z; }
    if (r0 + 3u < p.rows) { lg_logits[o + 3u] = acc.w; }
}
