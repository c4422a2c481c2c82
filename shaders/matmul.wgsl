// matmul.wgsl: out (M, N) = op(a) (M, K) · op(w) (K, N) [+ bias (N)] [+ out]
//
// Every matmul of a transformer step is one of these forms, chosen by override constants
// (launchers: matmul_forward, matmul_backward, classifier_forward, classifier_backward):
//   forward          out = inp · weight + bias         (TRANS_A=false, TRANS_B=false)
//   tied classifier  logits = x · wteᵀ                 (TRANS_B: w is (N, K))
//   backward dinp    dinp += dout · weightᵀ            (TRANS_B, ACCUMULATE)
//   backward dweight dweight += inpᵀ · dout            (TRANS_A: a is (K, M), ACCUMULATE)
//   classifier dx    dx += dlogits · wte               (ACCUMULATE)
//   classifier dwte  dwte += dlogitsᵀ · x              (TRANS_A, ACCUMULATE)
// and, with A_GELU, GPT-2's MLP projection reading its input before the GELU (the
// activation gelu(fch) is never stored; gelu_new is shaders/common.wgsl's, the function
// gelu_forward applies, so the result has the bits of gelu_forward + the plain form):
//   MLP projection   out = gelu(inp) · weight + bias   (A_GELU)
//   its dweight      dweight += gelu(inp)ᵀ · dout      (A_GELU, TRANS_A, ACCUMULATE)
// Each form runs on the tiled kernel (`matmul_forward`, or `matmul_forward_vec4` where
// the operands allow vec4 loads), on `matmul_forward_gemv` for M ≤ GEMV_MAX_M rows
// (decoding at T = 1), where a 64-row tile would be mostly empty, or on CPU adapters on `matmul_forward_rows`, which avoids workgroup memory and gathers, and
// `matmul_forward_gemv_cols(_vec4)` for M ≤ GEMV_MAX_M, which avoid barriers.
// `matmul_backward_bias` is the third gradient of the layer, dbias += Σ_rows dout.
// Backward kernels ADD into their gradients (ACCUMULATE, and always for the bias); the
// training step zeroes gradients once per step.
// Weights are kept in Hugging Face Conv1D layout, (C, OC) = (K, N), row-major.
// `a` and `w` are stored as A_T and W_T, defined in front of this file by the launcher's
// shader variant (src/kernels/mod.rs): both f32; w f16 (`matmul[w f16]`, the f16 path's
// weight copies); or both f16 (`matmul[a f16, w f16]`, the mixed path's matmuls, whose
// activations and gradients are f16 at the matmul inputs). Every value is widened to f32
// as it is loaded, and all arithmetic and accumulation is f32, so the variants differ
// only in the operands' rounding. out and bias are always f32.
//
// Sub-blocks: every operand is addressed as base + row·ld + column, so one launch can
// compute a block of a larger product. The launcher splits operands bigger than one
// binding (GPT-2's wte, 147 MiB) into row chunks, binds each chunk on its own and passes
// where the launch's block starts inside each binding: a chunk of wte rows is a column
// block of logits, or a row block of dwte, or a K block of dx (added up launch by launch).
// Launcher: src/kernels/matmul.rs. CPU reference: src/reference/matmul.rs.

// Mirrored by `MatmulParams` in src/kernels/matmul.rs.
struct MatmulParams {
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
    // A batch of products over the grid's z (the tiled kernel's `matmul_batched`, as in
    // matmul_subgroup.wgsl): product z = (zb, zi) = (z / zh, z % zh) has its operands
    // zb·s1 + zi·s2 elements further on. zh = 1 and the strides 0 when not batched.
    zh: u32,     // products per outer batch index
    so1: u32,    // out: stride per outer batch index
    so2: u32,    // out: stride per inner batch index
    sa1: u32,    // a: stride per outer batch index
    sa2: u32,    // a: stride per inner batch index
    sw1: u32,    // w: stride per outer batch index
    sw2: u32,    // w: stride per inner batch index
    flags: u32,  // HAS_BIAS (bit 0), ACCUMULATE (bit 1) for matmul_subgroup.wgsl's wide kernel
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override A_GELU: bool = false;  // op(a) is gelu_new of what a holds

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (M, N) block at off_o, stride ldo
@group(0) @binding(1) var<storage, read> a: array<A_T>;          // (M, K), or (K, M) if TRANS_A
@group(0) @binding(2) var<storage, read> w: array<W_T>;          // (K, N), or (N, K) if TRANS_B
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N); read only if HAS_BIAS
@group(0) @binding(4) var<uniform> p: MatmulParams;

// (out, a, w): how far this workgroup's product lies past the block's offsets, from the
// batch index (`batch_offsets`, called by the tiled entries); zero in the other kernels.
var<private> zoff: vec3<u32>;

fn batch_offsets(z: u32) {
    let zb = z / p.zh;
    let zi = z % p.zh;
    zoff = vec3(zb * p.so1 + zi * p.so2, zb * p.sa1 + zi * p.sa2, zb * p.sw1 + zi * p.sw2);
}

// Element i of the a binding as op(a) sees it: gelu_new(a[i]) with A_GELU. Every kernel
// reads a through here.
fn a_at(i: u32) -> f32 {
    let x = f32(a[i]);
    if (A_GELU) { return gelu_new(x); }
    return x;
}

// op(a)[m, k] and op(w)[k, n] of this launch's block, zero outside it.
fn load_a(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) { return 0.0; }
    if (TRANS_A) { return a_at(p.off_a + zoff.y + k * p.lda + m); }
    return a_at(p.off_a + zoff.y + m * p.lda + k);
}

fn load_w(k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) { return 0.0; }
    if (TRANS_B) { return f32(w[p.off_w + zoff.z + n * p.ldw + k]); }
    return f32(w[p.off_w + zoff.z + k * p.ldw + n]);
}

// out[m, n] = v (+ bias[n]) (+ out[m, n]): the one place both kernels write.
fn store_out(m: u32, n: u32, v: f32) {
    let i = p.off_o + zoff.x + m * p.ldo + n;
    var r = v;
    if (HAS_BIAS) { r += bias[p.off_b + n]; }
    if (ACCUMULATE) { r += out[i]; }
    out[i] = r;
}

// Row m, columns n .. n + 4 of out from v, each element only if inside the launch's block
// (the tiled and row kernels' stores).
fn store_out4(m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    if (n < p.n) { store_out(m, n, v.x); }
    if (n + 1u < p.n) { store_out(m, n + 1u, v.y); }
    if (n + 2u < p.n) { store_out(m, n + 2u, v.z); }
    if (n + 3u < p.n) { store_out(m, n + 3u, v.w); }
}

// ---- matmul_forward: tiled ------------------------------------------------------------
// A workgroup of TWX×TWY invocations computes a TM×TN = (RB·TWY)×(RB·TWX) tile of out.
// Each invocation owns an RB×RB register block (RB = 4 or 8) made of 4×4 sub-blocks:
// rows 4·(ty + TWY·i) + r and columns 4·(tx + TWX·j) + c for i, j < RB/4 and r, c < 4,
// so it alone writes those elements, and neighbouring invocations write neighbouring
// vec4s of a row. K is walked in slices of TK staged through workgroup memory
// ((TM + TN)·TK floats), kept as vec4s along M and along N: per k an invocation reads
// RB/4 vec4s of the a slice and RB/4 of the w slice and does RB·RB FMAs.
// Two entry points stage the slices: `matmul_forward` element by element (any shape,
// stride or offset), `matmul_forward_vec4` with vec4 loads along each operand's
// contiguous dimension, which the launcher picks when both operands' strides, offsets and
// the block's extent along that dimension are multiples of 4. They are two entry points,
// not one with a branch, because an entry point may not use two views of one binding
// (a and a4, w and w4) on WebGPU. Each output is the same FMA chain over k in order in
// both, so they give the same bits.
// The grid's z runs over a batch of products (`matmul_batched` on GPUs, attention's
// per-head products), each workgroup's operands offset by `batch_offsets`.
// TWX, TWY, RB and TK are override constants: the tile shape is tuned per adapter
// (src/kernels/tune.rs, `TileConfig` in src/kernels/matmul.rs); the defaults, 16×16
// invocations with 4×4 blocks and TK = 16, make 64×64 tiles and 8 KiB of workgroup memory.

override TWX: u32 = 16u;  // invocations along N
override TWY: u32 = 16u;  // invocations along M
override RB: u32 = 4u;    // rows and columns of out per invocation: 4 or 8 (fields of Block)
override TK: u32 = 16u;   // K slice staged per iteration (a multiple of 4)
override TM: u32 = RB * TWY;  // rows of out per workgroup
override TN: u32 = RB * TWX;  // columns of out per workgroup
override TM4: u32 = TM / 4u;
override TN4: u32 = TN / 4u;
override TILE_A4: u32 = TK * TM4;
override TILE_W4: u32 = TK * TN4;

var<workgroup> a_tile: array<vec4<f32>, TILE_A4>;  // (TK, TM/4): op(a)[m0 + 4·q + r, k0 + kk] at [kk·TM4 + q][r]
var<workgroup> w_tile: array<vec4<f32>, TILE_W4>;  // (TK, TN/4): op(w)[k0 + kk, n0 + 4·q + c] at [kk·TN4 + q][c]

// An invocation's block as named values, not an array: row ρ of the block and column
// group j (columns 4·(tx + TWX·j) .. + 4) in field c{2ρ + j}. Named fields with fixed
// indices stay in registers on every compiler; an array indexed in loops went to local
// memory on NVIDIA's Vulkan driver (the tiled kernel ran at 1.9 TFLOP/s on an H200,
// 2026-11-30). With RB = 4 only the fields of rows 0..3, column group 0 are used
// (c0, c2, c4, c6); `RB == 8u` is an override expression, so the other half compiles
// away.
struct Block {
    c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>,
    c4: vec4<f32>, c5: vec4<f32>, c6: vec4<f32>, c7: vec4<f32>,
    c8: vec4<f32>, c9: vec4<f32>, c10: vec4<f32>, c11: vec4<f32>,
    c12: vec4<f32>, c13: vec4<f32>, c14: vec4<f32>, c15: vec4<f32>,
}

@group(0) @binding(1) var<storage, read> a4: array<vec4<A_T>>;  // a viewed as vec4 (same binding)

// acc += a_tile row kk ⊗ w_tile row kk, for invocation t = (tx, ty): rows 4·i + r of the
// block take lane r of the a vec4 i, column group j the w vec4 j.
fn tile_fma(kk: u32, t: vec2<u32>, acc: ptr<function, Block>) {
    let a0 = a_tile[kk * TM4 + t.y];
    let w0 = w_tile[kk * TN4 + t.x];
    (*acc).c0 = fma(vec4<f32>(a0.x), w0, (*acc).c0);
    (*acc).c2 = fma(vec4<f32>(a0.y), w0, (*acc).c2);
    (*acc).c4 = fma(vec4<f32>(a0.z), w0, (*acc).c4);
    (*acc).c6 = fma(vec4<f32>(a0.w), w0, (*acc).c6);
    if (RB == 8u) {
        let a1 = a_tile[kk * TM4 + t.y + TWY];
        let w1 = w_tile[kk * TN4 + t.x + TWX];
        (*acc).c1 = fma(vec4<f32>(a0.x), w1, (*acc).c1);
        (*acc).c3 = fma(vec4<f32>(a0.y), w1, (*acc).c3);
        (*acc).c5 = fma(vec4<f32>(a0.z), w1, (*acc).c5);
        (*acc).c7 = fma(vec4<f32>(a0.w), w1, (*acc).c7);
        (*acc).c8 = fma(vec4<f32>(a1.x), w0, (*acc).c8);
        (*acc).c10 = fma(vec4<f32>(a1.y), w0, (*acc).c10);
        (*acc).c12 = fma(vec4<f32>(a1.z), w0, (*acc).c12);
        (*acc).c14 = fma(vec4<f32>(a1.w), w0, (*acc).c14);
        (*acc).c9 = fma(vec4<f32>(a1.x), w1, (*acc).c9);
        (*acc).c11 = fma(vec4<f32>(a1.y), w1, (*acc).c11);
        (*acc).c13 = fma(vec4<f32>(a1.z), w1, (*acc).c13);
        (*acc).c15 = fma(vec4<f32>(a1.w), w1, (*acc).c15);
    }
}

// The FMAs of the slice staged at k0 (after its barrier).
fn tile_slice(k0: u32, t: vec2<u32>, acc: ptr<function, Block>) {
    if (p.k - k0 >= TK) {
        for (var kk = 0u; kk < TK; kk++) { tile_fma(kk, t, acc); }
    } else {
        // The last, partial slice: skip its zero padding (K = 4 for the classifier's
        // dwte at B·T = 4 would otherwise cost 4 times its work).
        for (var kk = 0u; kk < p.k - k0; kk++) { tile_fma(kk, t, acc); }
    }
}

// Write an invocation's block: row 4·(ty + TWY·i) + r, columns 4·(tx + TWX·j) ...
fn tile_store(m0: u32, n0: u32, t: vec2<u32>, acc: ptr<function, Block>) {
    let m = m0 + 4u * t.y;
    let n = n0 + 4u * t.x;
    store_out4(m, n, (*acc).c0);
    store_out4(m + 1u, n, (*acc).c2);
    store_out4(m + 2u, n, (*acc).c4);
    store_out4(m + 3u, n, (*acc).c6);
    if (RB == 8u) {
        let m1 = m + 4u * TWY;
        let n1 = n + 4u * TWX;
        store_out4(m, n1, (*acc).c1);
        store_out4(m + 1u, n1, (*acc).c3);
        store_out4(m + 2u, n1, (*acc).c5);
        store_out4(m + 3u, n1, (*acc).c7);
        store_out4(m1, n, (*acc).c8);
        store_out4(m1 + 1u, n, (*acc).c10);
        store_out4(m1 + 2u, n, (*acc).c12);
        store_out4(m1 + 3u, n, (*acc).c14);
        store_out4(m1, n1, (*acc).c9);
        store_out4(m1 + 1u, n1, (*acc).c11);
        store_out4(m1 + 2u, n1, (*acc).c13);
        store_out4(m1 + 3u, n1, (*acc).c15);
    }
}

fn set_a_tile(kk: u32, mm: u32, v: f32) { a_tile[kk * TM4 + mm / 4u][mm % 4u] = v; }
fn set_w_tile(kk: u32, nn: u32, v: f32) { w_tile[kk * TN4 + nn / 4u][nn % 4u] = v; }

// Stage the a (TM×TK) and w (TK×TN) slices at k0 element by element (`matmul_forward`).
fn stage_slices(m0: u32, n0: u32, k0: u32, li: u32) {
    // Elements li, li + TWX·TWY, …, ordered so that neighbouring invocations read
    // neighbouring addresses.
    for (var e = li; e < 4u * TILE_A4; e += TWX * TWY) {
        if (TRANS_A) {
            let kk = e / TM; let mm = e % TM;
            set_a_tile(kk, mm, load_a(m0 + mm, k0 + kk));
        } else {
            let mm = e / TK; let kk = e % TK;
            set_a_tile(kk, mm, load_a(m0 + mm, k0 + kk));
        }
    }
    for (var e = li; e < 4u * TILE_W4; e += TWX * TWY) {
        if (TRANS_B) {
            let nn = e / TK; let kk = e % TK;
            set_w_tile(kk, nn, load_w(k0 + kk, n0 + nn));
        } else {
            let kk = e / TN; let nn = e % TN;
            set_w_tile(kk, nn, load_w(k0 + kk, n0 + nn));
        }
    }
}

// op(a) as vec4 element i of the a4 view (gelu_new of each lane with A_GELU).
fn a4_at(i: u32) -> vec4<f32> {
    let v = vec4<f32>(a4[i]);
    if (A_GELU) { return vec4<f32>(gelu_new(v.x), gelu_new(v.y), gelu_new(v.z), gelu_new(v.w)); }
    return v;
}

// Stage the slices at k0 a vec4 at a time (`matmul_forward_vec4`).
fn stage_slices_vec4(m0: u32, n0: u32, k0: u32, li: u32) {
    // A vec4 lies wholly inside or wholly outside the block (its extent along the vec4
    // is a multiple of 4); outside reads zero.
    for (var e = li; e < TILE_A4; e += TWX * TWY) {
        if (TRANS_A) {
            // a (K, M): 4 consecutive rows of op(a), one vec4 of the tile.
            let kk = e / TM4; let q = e % TM4;
            let k = k0 + kk; let m = m0 + 4u * q;
            var v = vec4<f32>(0.0);
            if (k < p.k && m < p.m) { v = a4_at((p.off_a + zoff.y + k * p.lda + m) / 4u); }
            a_tile[e] = v;
        } else {
            // a (M, K): 4 consecutive k of one row, one lane in each of 4 tile rows.
            let mm = e / (TK / 4u); let kk = 4u * (e % (TK / 4u));
            let m = m0 + mm; let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (m < p.m && k < p.k) { v = a4_at((p.off_a + zoff.y + m * p.lda + k) / 4u); }
            set_a_tile(kk, mm, v.x);
            set_a_tile(kk + 1u, mm, v.y);
            set_a_tile(kk + 2u, mm, v.z);
            set_a_tile(kk + 3u, mm, v.w);
        }
    }
    for (var e = li; e < TILE_W4; e += TWX * TWY) {
        if (TRANS_B) {
            // w (N, K): 4 consecutive k of one column of op(w).
            let nn = e / (TK / 4u); let kk = 4u * (e % (TK / 4u));
            let n = n0 + nn; let k = k0 + kk;
            var v = vec4<f32>(0.0);
            if (n < p.n && k < p.k) { v = vec4<f32>(w4[(p.off_w + zoff.z + n * p.ldw + k) / 4u]); }
            set_w_tile(kk, nn, v.x);
            set_w_tile(kk + 1u, nn, v.y);
            set_w_tile(kk + 2u, nn, v.z);
            set_w_tile(kk + 3u, nn, v.w);
        } else {
            // w (K, N): 4 consecutive columns, one vec4 of the tile.
            let kk = e / TN4; let q = e % TN4;
            let k = k0 + kk; let n = n0 + 4u * q;
            var v = vec4<f32>(0.0);
            if (k < p.k && n < p.n) { v = vec4<f32>(w4[(p.off_w + zoff.z + k * p.ldw + n) / 4u]); }
            w_tile[e] = v;
        }
    }
}

// The two entry points differ only in how they stage a slice; each uses one view of the
// a and w bindings (see above).
@compute @workgroup_size(TWX, TWY)
fn matmul_forward(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    batch_offsets(wg.z);
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    var acc: Block;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        stage_slices(m0, n0, k0, li);
        workgroupBarrier();
        tile_slice(k0, lid.xy, &acc);
        workgroupBarrier();
    }
    tile_store(m0, n0, lid.xy, &acc);
}

@compute @workgroup_size(TWX, TWY)
fn matmul_forward_vec4(@builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    batch_offsets(wg.z);
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    var acc: Block;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        stage_slices_vec4(m0, n0, k0, li);
        workgroupBarrier();
        tile_slice(k0, lid.xy, &acc);
        workgroupBarrier();
    }
    tile_store(m0, n0, lid.xy, &acc);
}

// ---- matmul_forward_gemv: M ≤ GEMV_MAX_M rows -------------------------------------------
// A 1-D launch of 64×4 workgroups; every invocation keeps one partial sum per row of out
// and the partial sums of an output are added in a fixed order, so results are the same
// bits run after run. Lanes follow w's contiguous dimension:
//   w (K, N) (not TRANS_B): a workgroup owns 64 columns; lane x reads column n0 + x of
//     rows k ≡ y (mod 4), so a row of 64 lanes reads 256 consecutive bytes of w; the 4
//     partial sums of a column are added in order y = 0, 1, 2, 3.
//   w (N, K) (TRANS_B, the tied classifier): a workgroup owns 4·GEMV_ROUNDS columns, 4
//     per round, one per y; lane x reads k ≡ x (mod 64) of w's row n, consecutive
//     across lanes; the 64 partial sums are added by a fixed 4-ary tree. Several rounds per
//     workgroup keep the launch at V / 32 workgroups rather than V / 4.
// op(a) is read directly: every lane of a row of the workgroup reads the same element.

const GEMV_MAX_M: u32 = 4u;  // rows of out at most; GEMV_MAX_M in src/kernels/matmul.rs
const GX: u32 = 64u;         // workgroup width
const GY: u32 = 4u;          // workgroup height
// TRANS_B: rounds of 4 columns per workgroup; GEMV_ROUNDS in src/kernels/matmul.rs.
override GEMV_ROUNDS: u32 = 8u;
// Rows of out this launch computes (p.m, 1..GEMV_MAX_M), fixed per pipeline so that the
// loops over rows do no wasted loads: on CPU adapters every load is a loop over the SIMD
// lanes, and a decode step (M = 1) would otherwise pay for 4 rows of a.
override GEMV_M: u32 = 4u;

// (2, GY, GEMV_MAX_M, GX): [half + (y * 4 + m) * 64 + x]; TRANS_B uses both halves.
var<workgroup> gemv_part: array<f32, 2048>;

// op(a)[m, k] for k < p.k; rows m ≥ p.m read row p.m - 1 again (their sums are never
// stored), so the loops over m have a constant trip count (GEMV_M) and no branch.
fn gemv_a(m: u32, k: u32) -> f32 {
    let mm = min(m, p.m - 1u);
    if (TRANS_A) { return a_at(p.off_a + k * p.lda + mm); }
    return a_at(p.off_a + mm * p.lda + k);
}

@compute @workgroup_size(64, 4)
fn matmul_forward_gemv(@builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let x = lid.x;
    let y = lid.y;
    let g = linear_workgroup(wg, nwg);
    if (TRANS_B) {
        for (var r = 0u; r < GEMV_ROUNDS; r++) {
            let n0 = (g * GEMV_ROUNDS + r) * GY;
            if (n0 >= p.n) { break; }  // past the last column (same for the whole workgroup)
            let n = n0 + y;
            var acc: array<f32, 4>;  // GEMV_MAX_M
            if (n < p.n) {
                for (var k = x; k < p.k; k += GX) {
                    let wv = f32(w[p.off_w + n * p.ldw + k]);
                    for (var m = 0u; m < GEMV_M; m++) { acc[m] = fma(gemv_a(m, k), wv, acc[m]); }
                }
            }
            // Rounds alternate halves of gemv_part, so a round's writes never meet the
            // previous round's reads (two barriers lie between them and the round before).
            let half = (r & 1u) * 1024u;
            for (var m = 0u; m < GEMV_M; m++) {
                gemv_part[half + (y * GEMV_MAX_M + m) * GX + x] = acc[m];
            }
            workgroupBarrier();
            // Fixed tree over the 64 lanes of each (y, m), 4 terms a level: 64 → 16 → 4 → 1.
            for (var s = GX / 4u; s > 1u; s /= 4u) {
                if (x < s) {
                    for (var m = 0u; m < GEMV_M; m++) {
                        let i = half + (y * GEMV_MAX_M + m) * GX + x;
                        gemv_part[i] = gemv_part[i] + gemv_part[i + s] + gemv_part[i + 2u * s]
                                     + gemv_part[i + 3u * s];
                    }
                }
                workgroupBarrier();
            }
            if (x < p.m && n < p.n) {
                let i = half + (y * GEMV_MAX_M + x) * GX;
                store_out(x, n, gemv_part[i] + gemv_part[i + 1u] + gemv_part[i + 2u] + gemv_part[i + 3u]);
            }
        }
    } else {
        if (g * GX >= p.n) { return; }  // a surplus workgroup of a folded launch
        let n = g * GX + x;
        var acc: array<f32, 4>;  // GEMV_MAX_M
        if (n < p.n) {
            for (var k = y; k < p.k; k += GY) {
                let wv = f32(w[p.off_w + k * p.ldw + n]);
                for (var m = 0u; m < GEMV_M; m++) { acc[m] = fma(gemv_a(m, k), wv, acc[m]); }
            }
        }
        for (var m = 0u; m < GEMV_M; m++) { gemv_part[(y * GEMV_MAX_M + m) * GX + x] = acc[m]; }
        workgroupBarrier();
        // Row m = y of out (GY = GEMV_MAX_M): add the GY partial sums in order.
        let m = y;
        if (m < p.m && n < p.n) {
            var v = 0.0;
            for (var yy = 0u; yy < GY; yy++) { v += gemv_part[(yy * GEMV_MAX_M + m) * GX + x]; }
            store_out(m, n, v);
        }
    }
}

// ---- matmul_forward_gemv_cols: M ≤ GEMV_MAX_M rows on CPU adapters ------------------------
// The gemv above splits K over 4 rows of 64 lanes and adds the partial sums in workgroup
// memory behind barriers; on a CPU adapter, where the barriers and every lane's loads are
// the cost, a decode step's matmuls run here instead: a workgroup is one SIMD register of
// GEMV_LANES lanes, each lane owns 4 consecutive columns of out and walks all of K alone
// (no workgroup memory, no barrier, a fixed summation order), so each value of op(a) it
// loads feeds 4 FMAs per row. w (K, N) only (not TRANS_B).

override GEMV_LANES: u32 = 8u;  // lanes per workgroup; GEMV_CPU_LANES in src/kernels/matmul.rs

@compute @workgroup_size(GEMV_LANES)
fn matmul_forward_gemv_cols(@builtin(workgroup_id) wg: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) li: u32) {
    let n = (linear_workgroup(wg, nwg) * GEMV_LANES + li) * 4u;
    if (n >= p.n) { return; }
    // Columns past the block re-read its last column (their sums are never stored).
    let last = p.n - 1u;
    let c1 = min(n + 1u, last);
    let c2 = min(n + 2u, last);
    let c3 = min(n + 3u, last);
    var acc: array<vec4<f32>, 4>;  // GEMV_MAX_M rows
    for (var k = 0u; k < p.k; k++) {
        let r = p.off_w + k * p.ldw;
        let wv = vec4<f32>(f32(w[r + n]), f32(w[r + c1]), f32(w[r + c2]), f32(w[r + c3]));
        for (var m = 0u; m < GEMV_M; m++) { acc[m] = fma(vec4<f32>(gemv_a(m, k)), wv, acc[m]); }
    }
    for (var m = 0u; m < GEMV_M; m++) { store_out4(m, n, acc[m]); }
}

// The same where the launcher finds w's row stride, its offset and the block's N multiples
// of 4 (as for the row kernel), wider: lane l owns the column quads (g·GEMV_LANES + l)·4
// for g < GEMV_QUADS, each read as one vec4 (lavapipe serves a vec4 load in one pass over
// the lanes, four scalar loads in four), so a workgroup reads 4·GEMV_LANES·GEMV_QUADS
// consecutive values of each row of w (512 bytes: whole cache lines, which the hardware
// prefetches) where the kernel above reads 128. Quads past the block re-read its last.
const GEMV_QUADS: u32 = 4u;  // GEMV_CPU_QUADS in src/kernels/matmul.rs

fn gemv_w4(k: u32, n: u32) -> vec4<f32> {
    return vec4<f32>(w4[(p.off_w + k * p.ldw + min(n, p.n - 4u)) / 4u]);
}

@compute @workgroup_size(GEMV_LANES)
fn matmul_forward_gemv_cols_vec4(@builtin(workgroup_id) wg: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
    let n = (linear_workgroup(wg, nwg) * GEMV_LANES * GEMV_QUADS + li) * 4u;
    let step = 4u * GEMV_LANES;  // from one of a lane's quads to the next
    if (n >= p.n) { return; }
    // Row m's sums for quad g in acc{g}[m].
    var acc0: array<vec4<f32>, 4>;  // GEMV_MAX_M rows
    var acc1: array<vec4<f32>, 4>;
    var acc2: array<vec4<f32>, 4>;
    var acc3: array<vec4<f32>, 4>;
    for (var k = 0u; k < p.k; k++) {
        let w0 = gemv_w4(k, n);
        let w1 = gemv_w4(k, n + step);
        let w2 = gemv_w4(k, n + 2u * step);
        let w3 = gemv_w4(k, n + 3u * step);
        for (var m = 0u; m < GEMV_M; m++) {
            let x = vec4<f32>(gemv_a(m, k));
            acc0[m] = fma(x, w0, acc0[m]);
            acc1[m] = fma(x, w1, acc1[m]);
            acc2[m] = fma(x, w2, acc2[m]);
            acc3[m] = fma(x, w3, acc3[m]);
        }
    }
    for (var m = 0u; m < GEMV_M; m++) {
        store_out4(m, n, acc0[m]);
        store_out4(m, n + step, acc1[m]);
        store_out4(m, n + 2u * step, acc2[m]);
        store_out4(m, n + 3u * step, acc3[m]);
    }
}

// ---- matmul_forward_rows: for CPU adapters ----------------------------------------------
// On CPU-backed adapters (lavapipe, llvmpipe, SwiftShader) an invocation is one SIMD lane
// and every load whose address differs between lanes is a gather, while a load whose
// address is the same for the whole workgroup is one scalar load. Barriers are costly
// too. So this kernel uses no workgroup memory: a workgroup owns RR = 16 rows of out,
// read from a with workgroup-uniform addresses, and each lane owns 4 columns of out, read
// from w as vec4s. K is walked 4 at a time.
//   w (K, N): the 4 columns are consecutive; 4 vec4 reads (one per k) feed 16·16 FMAs.
//   w (N, K) (TRANS_B): one vec4 of each column's row per 4 k; 4 reads feed 16·16 FMAs.
// Accumulators are the named fields of a Block (the tiled kernel's struct: row r of the
// 16 in field c{r}), not an array, so they stay in registers.

const RR: u32 = 16u;  // rows of out per workgroup; ROWS_M in src/kernels/matmul.rs

@group(0) @binding(2) var<storage, read> w4: array<vec4<W_T>>;  // w viewed as vec4 (same binding; also matmul_forward_vec4's)

// op(a)[m, k] with m clamped to the block's last row (its results are never stored).
fn rows_a(m: u32, k: u32) -> f32 {
    let mm = min(m, p.m - 1u);
    if (TRANS_A) { return a_at(p.off_a + k * p.lda + mm); }
    return a_at(p.off_a + mm * p.lda + k);
}

// op(a)[m, k .. k + 4]
fn rows_a4(m: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(rows_a(m, k), rows_a(m, k + 1u), rows_a(m, k + 2u), rows_a(m, k + 3u));
}

@compute @workgroup_size(64)
fn matmul_forward_rows(@builtin(workgroup_id) wg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * RR;
    let n = (wg.x * 64u + li) * 4u;
    if (TRANS_B) {
        rows_trans_b(m0, n);
    } else {
        rows_plain(m0, n);
    }
}

// Rows m0 .. m0 + 16 of out, columns n .. n + 4, from the block's fields c0 .. c15.
fn rows_store(m0: u32, n: u32, acc: ptr<function, Block>) {
    store_out4(m0, n, (*acc).c0);
    store_out4(m0 + 1u, n, (*acc).c1);
    store_out4(m0 + 2u, n, (*acc).c2);
    store_out4(m0 + 3u, n, (*acc).c3);
    store_out4(m0 + 4u, n, (*acc).c4);
    store_out4(m0 + 5u, n, (*acc).c5);
    store_out4(m0 + 6u, n, (*acc).c6);
    store_out4(m0 + 7u, n, (*acc).c7);
    store_out4(m0 + 8u, n, (*acc).c8);
    store_out4(m0 + 9u, n, (*acc).c9);
    store_out4(m0 + 10u, n, (*acc).c10);
    store_out4(m0 + 11u, n, (*acc).c11);
    store_out4(m0 + 12u, n, (*acc).c12);
    store_out4(m0 + 13u, n, (*acc).c13);
    store_out4(m0 + 14u, n, (*acc).c14);
    store_out4(m0 + 15u, n, (*acc).c15);
}

// w (K, N): columns n .. n + 4 (N, ldw and off_w are multiples of 4).
fn rows_plain(m0: u32, n: u32) {
    let nc = min(n, p.n - 4u);
    var acc: Block;  // zero; row r of the block in field c{r}
    let k4 = p.k & ~3u;
    for (var k = 0u; k < k4; k += 4u) {
        let w0 = vec4<f32>(w4[(p.off_w + k * p.ldw + nc) / 4u]);
        let w1 = vec4<f32>(w4[(p.off_w + (k + 1u) * p.ldw + nc) / 4u]);
        let w2 = vec4<f32>(w4[(p.off_w + (k + 2u) * p.ldw + nc) / 4u]);
        let w3 = vec4<f32>(w4[(p.off_w + (k + 3u) * p.ldw + nc) / 4u]);
        { let av = rows_a4(m0 + 0u, k); acc.c0 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c0)))); }
        { let av = rows_a4(m0 + 1u, k); acc.c1 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c1)))); }
        { let av = rows_a4(m0 + 2u, k); acc.c2 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c2)))); }
        { let av = rows_a4(m0 + 3u, k); acc.c3 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c3)))); }
        { let av = rows_a4(m0 + 4u, k); acc.c4 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c4)))); }
        { let av = rows_a4(m0 + 5u, k); acc.c5 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c5)))); }
        { let av = rows_a4(m0 + 6u, k); acc.c6 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c6)))); }
        { let av = rows_a4(m0 + 7u, k); acc.c7 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c7)))); }
        { let av = rows_a4(m0 + 8u, k); acc.c8 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c8)))); }
        { let av = rows_a4(m0 + 9u, k); acc.c9 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c9)))); }
        { let av = rows_a4(m0 + 10u, k); acc.c10 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c10)))); }
        { let av = rows_a4(m0 + 11u, k); acc.c11 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c11)))); }
        { let av = rows_a4(m0 + 12u, k); acc.c12 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c12)))); }
        { let av = rows_a4(m0 + 13u, k); acc.c13 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c13)))); }
        { let av = rows_a4(m0 + 14u, k); acc.c14 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c14)))); }
        { let av = rows_a4(m0 + 15u, k); acc.c15 = fma(vec4<f32>(av.x), w0, fma(vec4<f32>(av.y), w1, fma(vec4<f32>(av.z), w2, fma(vec4<f32>(av.w), w3, acc.c15)))); }
    }
    for (var k = k4; k < p.k; k++) {
        let wv = vec4<f32>(w4[(p.off_w + k * p.ldw + nc) / 4u]);
        acc.c0 = fma(vec4<f32>(rows_a(m0 + 0u, k)), wv, acc.c0);
        acc.c1 = fma(vec4<f32>(rows_a(m0 + 1u, k)), wv, acc.c1);
        acc.c2 = fma(vec4<f32>(rows_a(m0 + 2u, k)), wv, acc.c2);
        acc.c3 = fma(vec4<f32>(rows_a(m0 + 3u, k)), wv, acc.c3);
        acc.c4 = fma(vec4<f32>(rows_a(m0 + 4u, k)), wv, acc.c4);
        acc.c5 = fma(vec4<f32>(rows_a(m0 + 5u, k)), wv, acc.c5);
        acc.c6 = fma(vec4<f32>(rows_a(m0 + 6u, k)), wv, acc.c6);
        acc.c7 = fma(vec4<f32>(rows_a(m0 + 7u, k)), wv, acc.c7);
        acc.c8 = fma(vec4<f32>(rows_a(m0 + 8u, k)), wv, acc.c8);
        acc.c9 = fma(vec4<f32>(rows_a(m0 + 9u, k)), wv, acc.c9);
        acc.c10 = fma(vec4<f32>(rows_a(m0 + 10u, k)), wv, acc.c10);
        acc.c11 = fma(vec4<f32>(rows_a(m0 + 11u, k)), wv, acc.c11);
        acc.c12 = fma(vec4<f32>(rows_a(m0 + 12u, k)), wv, acc.c12);
        acc.c13 = fma(vec4<f32>(rows_a(m0 + 13u, k)), wv, acc.c13);
        acc.c14 = fma(vec4<f32>(rows_a(m0 + 14u, k)), wv, acc.c14);
        acc.c15 = fma(vec4<f32>(rows_a(m0 + 15u, k)), wv, acc.c15);
    }
    rows_store(m0, n, &acc);
}

// w (N, K): columns n .. n + 4, each read as vec4 along its row (K, ldw and off_w are
// multiples of 4); columns past the block re-read its last column and are not stored.
fn rows_trans_b(m0: u32, n: u32) {
    let r0 = p.off_w + min(n, p.n - 1u) * p.ldw;
    let r1 = p.off_w + min(n + 1u, p.n - 1u) * p.ldw;
    let r2 = p.off_w + min(n + 2u, p.n - 1u) * p.ldw;
    let r3 = p.off_w + min(n + 3u, p.n - 1u) * p.ldw;
    var acc: Block;  // zero; row r of the block in field c{r}
    for (var k = 0u; k < p.k; k += 4u) {
        let w0 = vec4<f32>(w4[(r0 + k) / 4u]);
        let w1 = vec4<f32>(w4[(r1 + k) / 4u]);
        let w2 = vec4<f32>(w4[(r2 + k) / 4u]);
        let w3 = vec4<f32>(w4[(r3 + k) / 4u]);
        { let av = rows_a4(m0 + 0u, k); acc.c0 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 1u, k); acc.c1 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 2u, k); acc.c2 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 3u, k); acc.c3 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 4u, k); acc.c4 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 5u, k); acc.c5 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 6u, k); acc.c6 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 7u, k); acc.c7 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 8u, k); acc.c8 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 9u, k); acc.c9 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 10u, k); acc.c10 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 11u, k); acc.c11 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 12u, k); acc.c12 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 13u, k); acc.c13 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 14u, k); acc.c14 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
        { let av = rows_a4(m0 + 15u, k); acc.c15 += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3)); }
    }
    rows_store(m0, n, &acc);
}

// ---- matmul_backward_bias: dbias (N) += Σ_m dout (M, N) -----------------------------------
// A 2-D launch: workgroup (x, s) owns 64 columns of slab s, rows [s·slab, (s+1)·slab) of
// dout. Row y of the workgroup sums the slab's rows m ≡ y (mod 4) in order, and the 4
// partial sums are added in order y = 0, 1, 2, 3 (reads coalesced along a row of dout).
// With one slab (M ≤ BIAS_ONE_SLAB_ROWS), that sum is added into dbias. With more, slab s
// writes it to row s of partials (S, N), and a second launch of this kernel, with one
// slab of S rows, adds the partials into dbias. Fixed order, so the same bits on every
// run. Slabs give a tall dout enough workgroups: one workgroup per 64 columns walking all
// 4096 rows of GPT-2's N = 768 made 12 workgroups, 0.25 ms on an H200 (2026-11-30).
// dinp and dweight are `matmul_forward` in its ACCUMULATE forms (see the top of the file).

// Mirrored by `BiasParams` in src/kernels/matmul.rs.
struct BiasParams {
    m: u32,       // rows of dout in this launch
    n: u32,       // columns (OC)
    slab: u32,    // rows per slab
    s0: u32,      // row of partials this launch's first slab writes
    direct: u32,  // 1: add into dbias (one slab); 0: write rows of partials
}

@group(0) @binding(0) var<storage, read_write> bb_dbias: array<f32>;  // (N), or partials (S, N)
@group(0) @binding(1) var<storage, read> bb_dout: array<f32>;         // (M, N)
@group(0) @binding(2) var<uniform> bb_p: BiasParams;

var<workgroup> bb_part: array<f32, 256>;  // (GY, GX)

@compute @workgroup_size(64, 4)
fn matmul_backward_bias(@builtin(workgroup_id) wg: vec3<u32>,
                        @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = wg.x * GX + lid.x;
    let r0 = wg.y * bb_p.slab;
    let r1 = min(r0 + bb_p.slab, bb_p.m);
    var acc = 0.0;
    if (n < bb_p.n) {
        for (var m = r0 + lid.y; m < r1; m += GY) { acc += bb_dout[m * bb_p.n + n]; }
    }
    bb_part[lid.y * GX + lid.x] = acc;
    workgroupBarrier();
    if (lid.y == 0u && n < bb_p.n) {
        var v = 0.0;
        for (var y = 0u; y < GY; y++) { v += bb_part[y * GX + lid.x]; }
        if (bb_p.direct == 1u) {
            bb_dbias[n] += v;
        } else {
            bb_dbias[(bb_p.s0 + wg.y) * bb_p.n + n] = v;
        }
    }
}
