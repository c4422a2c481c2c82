// matmul_subgroup.wgsl: matmul_forward_subgroup and matmul_forward_subgroup_wide(_vec4, _vec4_ta),
// the matmuls for CPU adapters that have subgroups (Mesa lavapipe exposes them: a subgroup
// is the 8 lanes of one AVX2 register); GPUs with subgroups run attention's batched
// products on the first. They compute the same forms as shaders/matmul.wgsl (see that
// file's header), with the same params, bindings and override constants, A_GELU included,
// except that the wide kernel reads HAS_BIAS and ACCUMULATE from the params' flags (see
// sg_store4). They are kept apart because only devices with the `subgroup` feature may
// compile them. The wide kernel (at the end of the file) takes the CPU adapters' blocks of
// more than 16 rows and 64 columns.
//
// Why it is fast there: a CPU adapter turns every storage load whose address differs
// between lanes into a loop over the lanes, so loads, not FMAs, bound a matmul. Here a
// workgroup is one subgroup of SG lanes that owns SR = 16 rows of out and SG·4 columns
// (lane l: columns 4l .. 4l + 4). For each slice of SG values of k, lane l loads a[m, k0 +
// l] for the 16 rows (one coalesced load each, instead of every lane loading the same
// value), and the k-th value reaches every lane through subgroupShuffle, a register
// permute. Each w value a lane loads feeds 16 FMAs. The grid's z runs over a batch of
// same-shaped products at strided offsets (attention's per-head products, see
// src/kernels/attention.rs); plain matmuls have one. On lavapipe this is 2.5–3x the
// throughput of matmul_forward_rows, and the wide kernel about 2.5x this (BENCHMARKS.md).
// Launcher: src/kernels/matmul.rs (Gemm::record). CPU reference: src/reference/matmul.rs.

// Mirrored by `BatchParams` in src/kernels/matmul.rs: shaders/matmul.wgsl's
// MatmulParams plus a batch of products over the grid's z = zb·zh_count + zh (attention's
// per-(batch, head) products), operand X of product z starting at off_X + zb·sX1 + zh·sX2.
struct SubgroupParams {
    m: u32,      // rows of this launch's block of out
    n: u32,      // columns of this launch's block of out
    k: u32,      // reduction length of this launch
    ldo: u32,    // row stride of out as stored (elements)
    lda: u32,    // row stride of a as stored: K, or M if TRANS_A (of the whole tensor)
    ldw: u32,    // row stride of w as stored: N, or K if TRANS_B
    off_o: u32,  // element of the out binding where the block's (0, 0) lies
    off_a: u32,  // element of the a binding where the block's op(a)(0, 0) lies
    off_w: u32,  // element of the w binding where the block's op(w)(0, 0) lies
    off_b: u32,  // element of the bias binding for the block's column 0
    zh: u32,     // products per outer batch index (1 when not batched)
    so1: u32,    // out: stride per outer batch index
    so2: u32,    // out: stride per inner batch index
    sa1: u32,    // a: stride per outer batch index
    sa2: u32,    // a: stride per inner batch index
    sw1: u32,    // w: stride per outer batch index
    sw2: u32,    // w: stride per inner batch index
    flags: u32,  // what a store adds to v: bias[n] if bit 0 (HAS_BIAS), out[m, n] if bit 1 (ACCUMULATE)
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// The narrow kernel's; the wide kernel reads p.flags instead (see sg_store4).
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override A_GELU: bool = false;  // op(a) is gelu_new (shaders/common.wgsl) of what a holds
override SG: u32 = 8u;  // the device's subgroup size (min = max); lanes per workgroup

const SR: u32 = 16u;  // rows of out per workgroup; SUBGROUP_ROWS in src/kernels/matmul.rs

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (M, N) block at off_o, stride ldo
@group(0) @binding(1) var<storage, read> a: array<A_T>;          // (M, K), or (K, M) if TRANS_A
@group(0) @binding(2) var<storage, read> w: array<W_T>;          // (K, N), or (N, K) if TRANS_B
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N); read only with p.flags bit 0
@group(0) @binding(4) var<uniform> p: SubgroupParams;

// op(a)[m, k]: rows past the block re-read its last row (their results are not stored),
// k past the block reads 0 (it is multiplied into every lane's sums). Each lane applies
// A_GELU's gelu_new to its own element, once per slice, before the shuffles share it.
fn sg_a(oa: u32, m: u32, k: u32) -> f32 {
    if (k >= p.k) { return 0.0; }
    let mm = min(m, p.m - 1u);
    let i = select(oa + mm * p.lda + k, oa + k * p.lda + mm, TRANS_A);
    let x = f32(a[i]);
    if (A_GELU) { return gelu_new(x); }
    return x;
}

// op(w)[k, n .. n + 4]; columns past the block re-read its last column (not stored).
fn sg_w4(ow: u32, k: u32, n: u32) -> vec4<f32> {
    let last = p.n - 1u;
    let n0 = min(n, last);
    let n1 = min(n + 1u, last);
    let n2 = min(n + 2u, last);
    let n3 = min(n + 3u, last);
    if (TRANS_B) {
        let r = ow + k;
        return vec4<f32>(f32(w[r + n0 * p.ldw]), f32(w[r + n1 * p.ldw]), f32(w[r + n2 * p.ldw]), f32(w[r + n3 * p.ldw]));
    }
    let r = ow + k * p.ldw;
    return vec4<f32>(f32(w[r + n0]), f32(w[r + n1]), f32(w[r + n2]), f32(w[r + n3]));
}

// out[m, n .. n + 4] = v (+ bias if has_bias) (+ out if accumulate), each column only if
// inside the block. The wide kernel passes p.flags' bits: as override constants they
// doubled its forms, which lavapipe compiles for 8–11 s each (a forward with bias and a dx
// added into are one form now). The narrow kernel passes the constants HAS_BIAS and
// ACCUMULATE, which fold away: it compiles in a second or two, and its short products
// (attention's, K = 32 to 64) are where an epilogue weighs most.
fn sg_store4(oo: u32, m: u32, n: u32, v: vec4<f32>, has_bias: bool, accumulate: bool) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let col = n + j;
        if (col < p.n) {
            let i = oo + m * p.ldo + col;
            var r = v[j];
            if (has_bias) { r += bias[p.off_b + col]; }
            if (accumulate) { r += out[i]; }
            out[i] = r;
        }
    }
}

@compute @workgroup_size(SG)
fn matmul_forward_subgroup(@builtin(workgroup_id) wg: vec3<u32>,
                           @builtin(subgroup_invocation_id) lane: u32) {
    let n = (wg.x * SG + lane) * 4u;
    let m0 = wg.y * SR;
    let zb = wg.z / p.zh;
    let zh = wg.z % p.zh;
    let oo = p.off_o + zb * p.so1 + zh * p.so2;
    let oa = p.off_a + zb * p.sa1 + zh * p.sa2;
    let ow = p.off_w + zb * p.sw1 + zh * p.sw2;
    // Accumulators are named values, not an array, so they stay in registers.
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var c4 = vec4<f32>(0.0);
    var c5 = vec4<f32>(0.0);
    var c6 = vec4<f32>(0.0);
    var c7 = vec4<f32>(0.0);
    var c8 = vec4<f32>(0.0);
    var c9 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c12 = vec4<f32>(0.0);
    var c13 = vec4<f32>(0.0);
    var c14 = vec4<f32>(0.0);
    var c15 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        // Lane l holds op(a)[m0 + r, k0 + l] in a<r>; step kk of the slice takes lane kk's.
        let kl = k0 + lane;
        let a0 = sg_a(oa, m0 + 0u, kl);
        let a1 = sg_a(oa, m0 + 1u, kl);
        let a2 = sg_a(oa, m0 + 2u, kl);
        let a3 = sg_a(oa, m0 + 3u, kl);
        let a4 = sg_a(oa, m0 + 4u, kl);
        let a5 = sg_a(oa, m0 + 5u, kl);
        let a6 = sg_a(oa, m0 + 6u, kl);
        let a7 = sg_a(oa, m0 + 7u, kl);
        let a8 = sg_a(oa, m0 + 8u, kl);
        let a9 = sg_a(oa, m0 + 9u, kl);
        let a10 = sg_a(oa, m0 + 10u, kl);
        let a11 = sg_a(oa, m0 + 11u, kl);
        let a12 = sg_a(oa, m0 + 12u, kl);
        let a13 = sg_a(oa, m0 + 13u, kl);
        let a14 = sg_a(oa, m0 + 14u, kl);
        let a15 = sg_a(oa, m0 + 15u, kl);
        let kn = min(SG, p.k - k0);
        for (var kk = 0u; kk < kn; kk++) {
            let wv = sg_w4(ow, k0 + kk, n);
            c0 = fma(vec4<f32>(subgroupShuffle(a0, kk)), wv, c0);
            c1 = fma(vec4<f32>(subgroupShuffle(a1, kk)), wv, c1);
            c2 = fma(vec4<f32>(subgroupShuffle(a2, kk)), wv, c2);
            c3 = fma(vec4<f32>(subgroupShuffle(a3, kk)), wv, c3);
            c4 = fma(vec4<f32>(subgroupShuffle(a4, kk)), wv, c4);
            c5 = fma(vec4<f32>(subgroupShuffle(a5, kk)), wv, c5);
            c6 = fma(vec4<f32>(subgroupShuffle(a6, kk)), wv, c6);
            c7 = fma(vec4<f32>(subgroupShuffle(a7, kk)), wv, c7);
            c8 = fma(vec4<f32>(subgroupShuffle(a8, kk)), wv, c8);
            c9 = fma(vec4<f32>(subgroupShuffle(a9, kk)), wv, c9);
            c10 = fma(vec4<f32>(subgroupShuffle(a10, kk)), wv, c10);
            c11 = fma(vec4<f32>(subgroupShuffle(a11, kk)), wv, c11);
            c12 = fma(vec4<f32>(subgroupShuffle(a12, kk)), wv, c12);
            c13 = fma(vec4<f32>(subgroupShuffle(a13, kk)), wv, c13);
            c14 = fma(vec4<f32>(subgroupShuffle(a14, kk)), wv, c14);
            c15 = fma(vec4<f32>(subgroupShuffle(a15, kk)), wv, c15);
        }
    }
    sg_store4(oo, m0 + 0u, n, c0, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 1u, n, c1, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 2u, n, c2, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 3u, n, c3, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 4u, n, c4, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 5u, n, c5, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 6u, n, c6, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 7u, n, c7, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 8u, n, c8, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 9u, n, c9, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 10u, n, c10, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 11u, n, c11, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 12u, n, c12, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 13u, n, c13, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 14u, n, c14, HAS_BIAS, ACCUMULATE);
    sg_store4(oo, m0 + 15u, n, c15, HAS_BIAS, ACCUMULATE);
}

// ---- matmul_forward_subgroup_wide: the same products on CPU adapters, 64×128 a workgroup --
// What bounds the kernel above on a CPU adapter is the loads of w, not the FMAs: each w
// value a lane loads feeds 16 FMAs. Here a workgroup (one subgroup) owns WR = 64 rows and
// 4·SG·WQ = 128 columns of out (SG = 8): lane l owns the column quads (g·SG + l)·4 .. + 4
// for g < WQ = 4, so each w value feeds 64 FMAs and each shuffled value of a feeds 16.
// A lane's 1024 sums cannot stay in registers (an AVX2 core has 16, AVX-512 32); they live
// on the stack. A slice of SG = 8 values of k therefore runs row by row: the slice's w
// (8 steps × the lane's 16 columns) is loaded once into v0..v7, and each row's 16 sums
// come into registers, take the slice's 8 steps, and go back, one load and store of the
// sums per 8 FMAs (step by step, every FMA loaded and stored its sum). Subgroups of 4
// lanes (lavapipe at 128-bit vectors, on CPUs without AVX) run their 4-step slices the
// same way, from v0..v3. On lavapipe 22.3
// the 32-row step-by-step form was about 2x the kernel above and this is about 1.25x that
// again (BENCHMARKS.md). K's last slice, when partial, runs as a full one whose steps past
// K add 0: one copy of the unrolled slice, where a step-by-step path for it made each form
// take 1.4x as long to compile on lavapipe. With SG other than 4 or 8 every slice runs
// step by step.
// GPUs keep the kernel above (attention's batched products on GPUs with subgroups): there
// 1024 sums an invocation would spill to local memory. Two entry points: element-wise
// loads of w (any shape), and `matmul_forward_subgroup_wide_vec4`, which loads w as vec4
// along its contiguous dimension where the launcher finds its stride, offset and the
// block's extent along that dimension multiples of 4 (as matmul_forward_vec4 does; an
// entry point may not use two views of one binding). Every output is the same FMA chain
// over k in order in all these kernels, so they give the same bits.

const WR: u32 = 64u;  // rows of out per workgroup; SUBGROUP_WIDE_ROWS in src/kernels/matmul.rs
const WQ: u32 = 4u;   // column quads per lane

// 16 columns of one row of a lane's block: column quad g in field c{g}.
struct Quad {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
}

// Four rows of a lane's block: row 4·i + r of the workgroup's rows in b{i}.r{r}.
struct Rows4 {
    r0: Quad, r1: Quad, r2: Quad, r3: Quad,
}

// A lane's block (64 rows × its 16 columns), its slice of op(a), op(a)[m0 + 4·i + r,
// k0 + lane] in x{i}[r], and a full slice's op(w)[k0 + j, the lane's 16 columns] in v{j}:
// named values, not arrays, because lavapipe turns an array indexed in a loop into
// gathers and scatters (5x slower in a probe, 2026-11-30).
var<private> b0: Rows4;
var<private> b1: Rows4;
var<private> b2: Rows4;
var<private> b3: Rows4;
var<private> b4: Rows4;
var<private> b5: Rows4;
var<private> b6: Rows4;
var<private> b7: Rows4;
var<private> b8: Rows4;
var<private> b9: Rows4;
var<private> b10: Rows4;
var<private> b11: Rows4;
var<private> b12: Rows4;
var<private> b13: Rows4;
var<private> b14: Rows4;
var<private> b15: Rows4;
var<private> x0: vec4<f32>;
var<private> x1: vec4<f32>;
var<private> x2: vec4<f32>;
var<private> x3: vec4<f32>;
var<private> x4: vec4<f32>;
var<private> x5: vec4<f32>;
var<private> x6: vec4<f32>;
var<private> x7: vec4<f32>;
var<private> x8: vec4<f32>;
var<private> x9: vec4<f32>;
var<private> x10: vec4<f32>;
var<private> x11: vec4<f32>;
var<private> x12: vec4<f32>;
var<private> x13: vec4<f32>;
var<private> x14: vec4<f32>;
var<private> x15: vec4<f32>;
var<private> v0: Quad;
var<private> v1: Quad;
var<private> v2: Quad;
var<private> v3: Quad;
var<private> v4: Quad;
var<private> v5: Quad;
var<private> v6: Quad;
var<private> v7: Quad;

@group(0) @binding(2) var<storage, read> w4: array<vec4<W_T>>;  // w viewed as vec4 (same binding)

// op(a)[m0 + 4·i + r, k] for r < 4: this lane's values of one slice (see sg_a).
fn wide_a4(oa: u32, m: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(sg_a(oa, m, k), sg_a(oa, m + 1u, k), sg_a(oa, m + 2u, k), sg_a(oa, m + 3u, k));
}

fn wide_load_a(oa: u32, m0: u32, k: u32) {
    x0 = wide_a4(oa, m0, k);
    x1 = wide_a4(oa, m0 + 4u, k);
    x2 = wide_a4(oa, m0 + 8u, k);
    x3 = wide_a4(oa, m0 + 12u, k);
    x4 = wide_a4(oa, m0 + 16u, k);
    x5 = wide_a4(oa, m0 + 20u, k);
    x6 = wide_a4(oa, m0 + 24u, k);
    x7 = wide_a4(oa, m0 + 28u, k);
    x8 = wide_a4(oa, m0 + 32u, k);
    x9 = wide_a4(oa, m0 + 36u, k);
    x10 = wide_a4(oa, m0 + 40u, k);
    x11 = wide_a4(oa, m0 + 44u, k);
    x12 = wide_a4(oa, m0 + 48u, k);
    x13 = wide_a4(oa, m0 + 52u, k);
    x14 = wide_a4(oa, m0 + 56u, k);
    x15 = wide_a4(oa, m0 + 60u, k);
}

fn quad_fma(q: Quad, s: f32, w: Quad) -> Quad {
    let v = vec4<f32>(s);
    return Quad(fma(v, w.c0, q.c0), fma(v, w.c1, q.c1), fma(v, w.c2, q.c2), fma(v, w.c3, q.c3));
}

fn rows4_fma(b: ptr<private, Rows4>, s: vec4<f32>, w: Quad) {
    (*b).r0 = quad_fma((*b).r0, s.x, w);
    (*b).r1 = quad_fma((*b).r1, s.y, w);
    (*b).r2 = quad_fma((*b).r2, s.z, w);
    (*b).r3 = quad_fma((*b).r3, s.w, w);
}

// Step kk of a slice run step by step (SG not 4 or 8): every row of the block += op(a)[row,
// k0 + kk] · w, where w holds op(w)[k0 + kk, the lane's 16 columns] and lane kk holds the
// a values.
fn wide_fma(kk: u32, w: Quad) {
    rows4_fma(&b0, subgroupShuffle(x0, kk), w);
    rows4_fma(&b1, subgroupShuffle(x1, kk), w);
    rows4_fma(&b2, subgroupShuffle(x2, kk), w);
    rows4_fma(&b3, subgroupShuffle(x3, kk), w);
    rows4_fma(&b4, subgroupShuffle(x4, kk), w);
    rows4_fma(&b5, subgroupShuffle(x5, kk), w);
    rows4_fma(&b6, subgroupShuffle(x6, kk), w);
    rows4_fma(&b7, subgroupShuffle(x7, kk), w);
    rows4_fma(&b8, subgroupShuffle(x8, kk), w);
    rows4_fma(&b9, subgroupShuffle(x9, kk), w);
    rows4_fma(&b10, subgroupShuffle(x10, kk), w);
    rows4_fma(&b11, subgroupShuffle(x11, kk), w);
    rows4_fma(&b12, subgroupShuffle(x12, kk), w);
    rows4_fma(&b13, subgroupShuffle(x13, kk), w);
    rows4_fma(&b14, subgroupShuffle(x14, kk), w);
    rows4_fma(&b15, subgroupShuffle(x15, kk), w);
}

// One row's sums q after the SG (8 or 4) steps of a full slice: lane j holds the row's
// a value s of step j, v{j} the step's w. `SG == 8u` is an override expression, so at 4
// lanes the last four steps compile away.
fn row_slice(q: Quad, s: f32) -> Quad {
    var r = quad_fma(q, subgroupShuffle(s, 0u), v0);
    r = quad_fma(r, subgroupShuffle(s, 1u), v1);
    r = quad_fma(r, subgroupShuffle(s, 2u), v2);
    r = quad_fma(r, subgroupShuffle(s, 3u), v3);
    if (SG == 8u) {
        r = quad_fma(r, subgroupShuffle(s, 4u), v4);
        r = quad_fma(r, subgroupShuffle(s, 5u), v5);
        r = quad_fma(r, subgroupShuffle(s, 6u), v6);
        r = quad_fma(r, subgroupShuffle(s, 7u), v7);
    }
    return r;
}

fn rows4_slice(b: ptr<private, Rows4>, x: vec4<f32>) {
    (*b).r0 = row_slice((*b).r0, x.x);
    (*b).r1 = row_slice((*b).r1, x.y);
    (*b).r2 = row_slice((*b).r2, x.z);
    (*b).r3 = row_slice((*b).r3, x.w);
}

// A full slice (SG = 8 or 4 values of k), its w already in v0..v7 (v0..v3), row by row.
fn wide_slice() {
    rows4_slice(&b0, x0);
    rows4_slice(&b1, x1);
    rows4_slice(&b2, x2);
    rows4_slice(&b3, x3);
    rows4_slice(&b4, x4);
    rows4_slice(&b5, x5);
    rows4_slice(&b6, x6);
    rows4_slice(&b7, x7);
    rows4_slice(&b8, x8);
    rows4_slice(&b9, x9);
    rows4_slice(&b10, x10);
    rows4_slice(&b11, x11);
    rows4_slice(&b12, x12);
    rows4_slice(&b13, x13);
    rows4_slice(&b14, x14);
    rows4_slice(&b15, x15);
}

// The step of w a slice's step k reads: K's last slice, when partial, re-reads step K − 1
// past K, where every lane's a is 0 (see sg_a), so those steps add 0 to every sum.
fn wide_k(k: u32) -> u32 {
    return min(k, p.k - 1u);
}

fn quad_store(oo: u32, m: u32, n: u32, q: Quad) {
    let with_bias = (p.flags & 1u) != 0u;
    let add_out = (p.flags & 2u) != 0u;
    sg_store4(oo, m, n, q.c0, with_bias, add_out);
    sg_store4(oo, m, n + 4u * SG, q.c1, with_bias, add_out);
    sg_store4(oo, m, n + 8u * SG, q.c2, with_bias, add_out);
    sg_store4(oo, m, n + 12u * SG, q.c3, with_bias, add_out);
}

fn rows4_store(oo: u32, m: u32, n: u32, b: Rows4) {
    quad_store(oo, m, n, b.r0);
    quad_store(oo, m + 1u, n, b.r1);
    quad_store(oo, m + 2u, n, b.r2);
    quad_store(oo, m + 3u, n, b.r3);
}

// The block's rows, 4 at a time: a loop, whose switch picks the rows' sums, rather than
// 16 copies of the stores, which made lavapipe 22.3 take 5x as long to compile the kernel
// when it accumulated (each store is a loop over the lanes; a probe, 2026-11-30).
fn wide_store(oo: u32, m0: u32, n: u32) {
    for (var g = 0u; g < WR / 4u; g++) {
        var b = b0;
        switch g {
            case 1u: { b = b1; }
            case 2u: { b = b2; }
            case 3u: { b = b3; }
            case 4u: { b = b4; }
            case 5u: { b = b5; }
            case 6u: { b = b6; }
            case 7u: { b = b7; }
            case 8u: { b = b8; }
            case 9u: { b = b9; }
            case 10u: { b = b10; }
            case 11u: { b = b11; }
            case 12u: { b = b12; }
            case 13u: { b = b13; }
            case 14u: { b = b14; }
            case 15u: { b = b15; }
            default: {}
        }
        rows4_store(oo, m0 + 4u * g, n, b);
    }
}

// Where a workgroup's block starts: the offsets of product z (as in the kernel above),
// the first row, and the lane's first column.
struct WideOrigin {
    oo: u32, oa: u32, ow: u32, m0: u32, n: u32,
}

fn wide_origin(wg: vec3<u32>, lane: u32) -> WideOrigin {
    let zb = wg.z / p.zh;
    let zh = wg.z % p.zh;
    return WideOrigin(p.off_o + zb * p.so1 + zh * p.so2, p.off_a + zb * p.sa1 + zh * p.sa2,
                      p.off_w + zb * p.sw1 + zh * p.sw2, wg.y * WR, (wg.x * SG * WQ + lane) * 4u);
}

// op(w)[k, the lane's 16 columns], element-wise loads.
fn wide_w(o: WideOrigin, k: u32) -> Quad {
    return Quad(sg_w4(o.ow, k, o.n), sg_w4(o.ow, k, o.n + 4u * SG), sg_w4(o.ow, k, o.n + 8u * SG),
                sg_w4(o.ow, k, o.n + 12u * SG));
}

@compute @workgroup_size(SG)
fn matmul_forward_subgroup_wide(@builtin(workgroup_id) wg: vec3<u32>,
                                @builtin(subgroup_invocation_id) lane: u32) {
    let o = wide_origin(wg, lane);
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        wide_load_a(o.oa, o.m0, k0 + lane);
        if (SG == 8u || SG == 4u) {
            v0 = wide_w(o, k0);
            v1 = wide_w(o, wide_k(k0 + 1u));
            v2 = wide_w(o, wide_k(k0 + 2u));
            v3 = wide_w(o, wide_k(k0 + 3u));
            if (SG == 8u) {
                v4 = wide_w(o, wide_k(k0 + 4u));
                v5 = wide_w(o, wide_k(k0 + 5u));
                v6 = wide_w(o, wide_k(k0 + 6u));
                v7 = wide_w(o, wide_k(k0 + 7u));
            }
            wide_slice();
        } else {
            for (var kk = 0u; kk < min(SG, p.k - k0); kk++) {
                wide_fma(kk, wide_w(o, k0 + kk));
            }
        }
    }
    wide_store(o.oo, o.m0, o.n);
}

// op(w)[k, n .. n + 4] as one vec4 load (w is (K, N), N a multiple of 4); a quad past the
// block re-reads its last one (not stored).
fn wide_w4(ow: u32, k: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(w4[(ow + k * p.ldw + min(n, p.n - 4u)) / 4u]);
}

// op(w)[k, the lane's 16 columns] from w stored (K, N), as vec4 loads.
fn wide_w_vec4(o: WideOrigin, k: u32) -> Quad {
    return Quad(wide_w4(o.ow, k, o.n), wide_w4(o.ow, k, o.n + 4u * SG),
                wide_w4(o.ow, k, o.n + 8u * SG), wide_w4(o.ow, k, o.n + 12u * SG));
}

// op(w)[k .. k + 4, n .. n + 4] from w stored (N, K) (K a multiple of 4): column n + j's
// four values of k in one vec4 load, as column j of the matrix, whose transpose's
// column i is then op(w)[k + i, n .. n + 4]. Columns past the block re-read its last one.
fn wide_w4_t(ow: u32, k: u32, n: u32) -> mat4x4<f32> {
    let last = p.n - 1u;
    return transpose(mat4x4<f32>(vec4<f32>(w4[(ow + min(n, last) * p.ldw + k) / 4u]),
                                 vec4<f32>(w4[(ow + min(n + 1u, last) * p.ldw + k) / 4u]),
                                 vec4<f32>(w4[(ow + min(n + 2u, last) * p.ldw + k) / 4u]),
                                 vec4<f32>(w4[(ow + min(n + 3u, last) * p.ldw + k) / 4u])));
}

// op(w)[k .. k + 4, the lane's 16 columns] from w stored (N, K): step k + i in column i
// of each quad's matrix.
struct QuadT {
    t0: mat4x4<f32>, t1: mat4x4<f32>, t2: mat4x4<f32>, t3: mat4x4<f32>,
}

fn wide_w_t(o: WideOrigin, k: u32) -> QuadT {
    return QuadT(wide_w4_t(o.ow, k, o.n), wide_w4_t(o.ow, k, o.n + 4u * SG),
                 wide_w4_t(o.ow, k, o.n + 8u * SG), wide_w4_t(o.ow, k, o.n + 12u * SG));
}

// Column j of m, chosen by selects: a dynamic index would put m in memory.
fn mat_col(m: mat4x4<f32>, j: u32) -> vec4<f32> {
    return select(select(m[2], m[3], j == 3u), select(m[0], m[1], j == 1u), j < 2u);
}

// Step k + j of a QuadT (j dynamic).
fn quad_t_step(t: QuadT, j: u32) -> Quad {
    return Quad(mat_col(t.t0, j), mat_col(t.t1, j), mat_col(t.t2, j), mat_col(t.t3, j));
}

// One slice of SG values of k from k0, a's values already in x0..x15: every row of the
// block += op(a)[row, k] · op(w)[k, the lane's columns], w read as vec4.
fn wide_slice_w4(o: WideOrigin, k0: u32) {
    if (SG == 8u || SG == 4u) {
        if (TRANS_B) {
            let t = wide_w_t(o, k0);
            v0 = Quad(t.t0[0], t.t1[0], t.t2[0], t.t3[0]);
            v1 = Quad(t.t0[1], t.t1[1], t.t2[1], t.t3[1]);
            v2 = Quad(t.t0[2], t.t1[2], t.t2[2], t.t3[2]);
            v3 = Quad(t.t0[3], t.t1[3], t.t2[3], t.t3[3]);
            if (SG == 8u) {
                // K is a multiple of 4, so a partial last slice re-reads its first four
                // steps (at 4 lanes every slice is whole).
                let u = wide_w_t(o, min(k0 + 4u, p.k - 4u));
                v4 = Quad(u.t0[0], u.t1[0], u.t2[0], u.t3[0]);
                v5 = Quad(u.t0[1], u.t1[1], u.t2[1], u.t3[1]);
                v6 = Quad(u.t0[2], u.t1[2], u.t2[2], u.t3[2]);
                v7 = Quad(u.t0[3], u.t1[3], u.t2[3], u.t3[3]);
            }
        } else {
            v0 = wide_w_vec4(o, k0);
            v1 = wide_w_vec4(o, wide_k(k0 + 1u));
            v2 = wide_w_vec4(o, wide_k(k0 + 2u));
            v3 = wide_w_vec4(o, wide_k(k0 + 3u));
            if (SG == 8u) {
                v4 = wide_w_vec4(o, wide_k(k0 + 4u));
                v5 = wide_w_vec4(o, wide_k(k0 + 5u));
                v6 = wide_w_vec4(o, wide_k(k0 + 6u));
                v7 = wide_w_vec4(o, wide_k(k0 + 7u));
            }
        }
        wide_slice();
        return;
    }
    let kn = min(SG, p.k - k0);  // a subgroup of another size than 8 or 4: step by step
    if (TRANS_B) {
        // kn is a multiple of 4: K is, and so is k0.
        for (var kq = 0u; kq < kn; kq += 4u) {
            let t = wide_w_t(o, k0 + kq);
            for (var j = 0u; j < 4u; j++) {
                wide_fma(kq + j, quad_t_step(t, j));
            }
        }
    } else {
        for (var kk = 0u; kk < kn; kk++) {
            wide_fma(kk, wide_w_vec4(o, k0 + kk));
        }
    }
}

@compute @workgroup_size(SG)
fn matmul_forward_subgroup_wide_vec4(@builtin(workgroup_id) wg: vec3<u32>,
                                     @builtin(subgroup_invocation_id) lane: u32) {
    let o = wide_origin(wg, lane);
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        wide_load_a(o.oa, o.m0, k0 + lane);
        wide_slice_w4(o, k0);
    }
    wide_store(o.oo, o.m0, o.n);
}

// ---- matmul_forward_subgroup_wide_vec4_ta: TRANS_A forms with a read as vec4 too ----------
// For a stored (K, M) (the weight gradients, dweight += inpᵀ · dout, and the classifier's
// dwte), the 64 values of a lane's slice of op(a), rows m0 .. m0 + 64 at one k, are
// consecutive in memory: 16 vec4 loads instead of 64 scalar ones (lavapipe serves either in
// one pass over the lanes). For where the launcher finds a's stride and offset (of every
// product of a batch) and the block's M multiples of 4, and w readable as vec4. A vec4 past
// the block re-reads its last (those rows are not stored).

@group(0) @binding(1) var<storage, read> a4: array<vec4<A_T>>;  // a viewed as vec4 (same binding)

// op(a)[m .. m + 4, k] = a[k, m .. m + 4] as one load (0 past K; gelu_new'd under A_GELU).
fn wide_a4_ta(oa: u32, m: u32, k: u32) -> vec4<f32> {
    if (k >= p.k) { return vec4<f32>(0.0); }
    let x = vec4<f32>(a4[(oa + k * p.lda + min(m, p.m - 4u)) / 4u]);
    if (A_GELU) { return vec4<f32>(gelu_new(x.x), gelu_new(x.y), gelu_new(x.z), gelu_new(x.w)); }
    return x;
}

@compute @workgroup_size(SG)
fn matmul_forward_subgroup_wide_vec4_ta(@builtin(workgroup_id) wg: vec3<u32>,
                                        @builtin(subgroup_invocation_id) lane: u32) {
    let o = wide_origin(wg, lane);
    for (var k0 = 0u; k0 < p.k; k0 += SG) {
        let k = k0 + lane;
        x0 = wide_a4_ta(o.oa, o.m0, k);
        x1 = wide_a4_ta(o.oa, o.m0 + 4u, k);
        x2 = wide_a4_ta(o.oa, o.m0 + 8u, k);
        x3 = wide_a4_ta(o.oa, o.m0 + 12u, k);
        x4 = wide_a4_ta(o.oa, o.m0 + 16u, k);
        x5 = wide_a4_ta(o.oa, o.m0 + 20u, k);
        x6 = wide_a4_ta(o.oa, o.m0 + 24u, k);
        x7 = wide_a4_ta(o.oa, o.m0 + 28u, k);
        x8 = wide_a4_ta(o.oa, o.m0 + 32u, k);
        x9 = wide_a4_ta(o.oa, o.m0 + 36u, k);
        x10 = wide_a4_ta(o.oa, o.m0 + 40u, k);
        x11 = wide_a4_ta(o.oa, o.m0 + 44u, k);
        x12 = wide_a4_ta(o.oa, o.m0 + 48u, k);
        x13 = wide_a4_ta(o.oa, o.m0 + 52u, k);
        x14 = wide_a4_ta(o.oa, o.m0 + 56u, k);
        x15 = wide_a4_ta(o.oa, o.m0 + 60u, k);
        wide_slice_w4(o, k0);
    }
    wide_store(o.oo, o.m0, o.n);
}
