// matmul_subgroup.wgsl: matmul_forward_subgroup, the matmul for CPU adapters that have
// subgroups (Mesa lavapipe exposes them: a subgroup is the 8 lanes of one AVX2 register).
// It computes the same forms as shaders/matmul.wgsl (same params, bindings and override
// constants, A_GELU included; see that file's header) and is kept apart because only
// devices with the `subgroup` feature may compile it.
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
// throughput of matmul_forward_rows (BENCHMARKS.md).
// Launcher: src/kernels/matmul.rs (Gemm::record). CPU reference: src/reference/matmul.rs.

// Mirrored by `SubgroupParams` in src/kernels/matmul.rs: shaders/matmul.wgsl's
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
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override A_GELU: bool = false;  // op(a) is gelu_new (shaders/common.wgsl) of what a holds
override SG: u32 = 8u;  // the device's subgroup size (min = max); lanes per workgroup

const SR: u32 = 16u;  // rows of out per workgroup; SUBGROUP_ROWS in src/kernels/matmul.rs

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (M, N) block at off_o, stride ldo
@group(0) @binding(1) var<storage, read> a: array<A_T>;          // (M, K), or (K, M) if TRANS_A
@group(0) @binding(2) var<storage, read> w: array<W_T>;          // (K, N), or (N, K) if TRANS_B
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N); read only if HAS_BIAS
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

// out[m, n .. n + 4] = v (+ bias) (+ out), each column only if inside the block.
fn sg_store4(oo: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let col = n + j;
        if (col < p.n) {
            let i = oo + m * p.ldo + col;
            var r = v[j];
            if (HAS_BIAS) { r += bias[p.off_b + col]; }
            if (ACCUMULATE) { r += out[i]; }
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
    sg_store4(oo, m0 + 0u, n, c0);
    sg_store4(oo, m0 + 1u, n, c1);
    sg_store4(oo, m0 + 2u, n, c2);
    sg_store4(oo, m0 + 3u, n, c3);
    sg_store4(oo, m0 + 4u, n, c4);
    sg_store4(oo, m0 + 5u, n, c5);
    sg_store4(oo, m0 + 6u, n, c6);
    sg_store4(oo, m0 + 7u, n, c7);
    sg_store4(oo, m0 + 8u, n, c8);
    sg_store4(oo, m0 + 9u, n, c9);
    sg_store4(oo, m0 + 10u, n, c10);
    sg_store4(oo, m0 + 11u, n, c11);
    sg_store4(oo, m0 + 12u, n, c12);
    sg_store4(oo, m0 + 13u, n, c13);
    sg_store4(oo, m0 + 14u, n, c14);
    sg_store4(oo, m0 + 15u, n, c15);
}
