// matmul.wgsl: out (M, N) = op(a) (M, K) · op(w) (K, N) [+ bias (N)] [+ out]
//
// One kernel serves every matmul of a transformer step through override constants:
//   forward          out = inp · weight + bias         (TRANS_A=false, TRANS_B=false)
//   tied classifier  logits = x · wteᵀ                 (TRANS_B: w is (N, K))
//   backward dinp    dinp += dout · weightᵀ            (TRANS_B, ACCUMULATE)
//   backward dweight dweight += inpᵀ · dout            (TRANS_A: a is (K, M), ACCUMULATE)
// Weights are kept in Hugging Face Conv1D layout, (C, OC) = (K, N), row-major.
//
// Tiling: a workgroup of 16×16 invocations computes a 64×64 tile of out; each invocation
// owns a 4×4 block (rows ty + 16 i, columns tx + 16 j), so it alone writes those
// elements. K is walked in slices of 16 staged through workgroup memory (8 KiB).
// Launcher: src/kernels/matmul.rs. CPU reference: src/reference/matmul.rs.

struct MatmulParams {
    m: u32,  // rows of out (B·T)
    n: u32,  // columns of out (OC)
    k: u32,  // reduction length (C)
}

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;

@group(0) @binding(0) var<storage, read_write> out: array<f32>;  // (M, N)
@group(0) @binding(1) var<storage, read> a: array<f32>;          // (M, K), or (K, M) if TRANS_A
@group(0) @binding(2) var<storage, read> w: array<f32>;          // (K, N), or (N, K) if TRANS_B
@group(0) @binding(3) var<storage, read> bias: array<f32>;       // (N); read only if HAS_BIAS
@group(0) @binding(4) var<uniform> p: MatmulParams;

const TM: u32 = 64u;  // rows of out per workgroup
const TN: u32 = 64u;  // columns of out per workgroup
const TK: u32 = 16u;  // K slice staged per iteration

var<workgroup> a_tile: array<f32, 1024>;  // (TK, TM): a_tile[kk * TM + mm]
var<workgroup> w_tile: array<f32, 1024>;  // (TK, TN): w_tile[kk * TN + nn]

fn load_a(m: u32, k: u32) -> f32 {
    if (m >= p.m || k >= p.k) { return 0.0; }
    if (TRANS_A) { return a[k * p.m + m]; }
    return a[m * p.k + k];
}

fn load_w(k: u32, n: u32) -> f32 {
    if (k >= p.k || n >= p.n) { return 0.0; }
    if (TRANS_B) { return w[n * p.k + k]; }
    return w[k * p.n + n];
}

@compute @workgroup_size(16, 16)
fn matmul_forward(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    var acc: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        // Stage a (TM×TK) and w (TK×TN) slices: 1024 elements each, 4 per invocation,
        // ordered so that neighbouring invocations read neighbouring addresses.
        for (var r = 0u; r < 4u; r++) {
            let e = li + r * 256u;
            if (TRANS_A) {
                let kk = e / TM; let mm = e % TM;
                a_tile[kk * TM + mm] = load_a(m0 + mm, k0 + kk);
            } else {
                let mm = e / TK; let kk = e % TK;
                a_tile[kk * TM + mm] = load_a(m0 + mm, k0 + kk);
            }
            if (TRANS_B) {
                let nn = e / TK; let kk = e % TK;
                w_tile[kk * TN + nn] = load_w(k0 + kk, n0 + nn);
            } else {
                let kk = e / TN; let nn = e % TN;
                w_tile[kk * TN + nn] = load_w(k0 + kk, n0 + nn);
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var wv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) { av[i] = a_tile[kk * TM + lid.y + 16u * i]; }
            for (var j = 0u; j < 4u; j++) { wv[j] = w_tile[kk * TN + lid.x + 16u * j]; }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(av[i], wv[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y + 16u * i;
        if (m >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x + 16u * j;
            if (n >= p.n) { continue; }
            var v = acc[i * 4u + j];
            if (HAS_BIAS) { v += bias[n]; }
            if (ACCUMULATE) { v += out[m * p.n + n]; }
            out[m * p.n + n] = v;
        }
    }
}
