// gelu.wgsl: GELU in its two forms, each with its backward.
//   gelu_forward / gelu_backward: the tanh approximation (Hugging Face `gelu_new`,
//   GPT-2's MLP), gelu(x) = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³).
//   gelu_erf_forward / gelu_erf_backward: the exact form (torch `nn.GELU()`'s default,
//   Hugging Face "gelu", BERT), gelu(x) = x·Φ(x) = 0.5·x·(1 + erf(x/√2)).
// One element per invocation; 1-D launches the scheduler may fold into 2-D
// (linear_workgroup). The tanh form's value is `gelu_new` and its clamped tanh
// `gelu_tanh`, in shaders/common.wgsl because the matmul shaders apply the same function
// to their a operand (A_GELU) and must give the same bits. The clamp makes large finite
// |x| give gelu(x) = x or ±0 and gelu'(x) = 1 or 0, never NaN; the erf form saturates the
// same way (gelu_cdf, gelu_erf_backward).
// WGSL has no erf: gelu_cdf computes Φ from a polynomial for erf near 0 and a
// Chebyshev fit of erfc beyond (erf_small, erfc_tail), to ~1.5e-7 absolute in f32.
// Launchers: src/kernels/gelu.rs. CPU references: src/reference/gelu.rs.

// Mirrored by `GeluParams` in src/kernels/gelu.rs.
struct GeluParams {
    n: u32,  // elements (B·T·4C in GPT-2's MLP)
}

const WG: u32 = 256u;
// GELU_SCALE, GELU_CUBIC, gelu_tanh and gelu_new: shaders/common.wgsl.

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> fwd_inp: array<f32>;        // (N)
@group(0) @binding(2) var<uniform> fwd_p: GeluParams;

// out = gelu(inp)
@compute @workgroup_size(WG)
fn gelu_forward(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < fwd_p.n) {
        fwd_out[i] = gelu_new(fwd_inp[i]);
    }
}

@group(0) @binding(0) var<storage, read_write> bwd_dinp: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> bwd_inp: array<f32>;         // (N)
@group(0) @binding(2) var<storage, read> bwd_dout: array<f32>;        // (N)
@group(0) @binding(3) var<uniform> bwd_p: GeluParams;

// dinp += gelu'(inp)·dout, with
//   gelu'(x) = 0.5·(1 + tanh u) + 0.5·x·(1 − tanh² u)·√(2/π)·(1 + 3·0.044715·x²).
// Where tanh is clamped (|u| ≥ 15) the second term is exactly 0. Gradients are added into; the training step zeroes them once per step.
@compute @workgroup_size(WG)
fn gelu_backward(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < bwd_p.n) {
        let x = bwd_inp[i];
        let th = gelu_tanh(x);
        let sech2 = 1.0 - th * th;
        let du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
        // Saturated (sech² = 0): skip the second term, whose du may be inf for huge |x|.
        let slope = select(0.5 * x * sech2 * du, 0.0, sech2 == 0.0);
        let local_grad = 0.5 * (1.0 + th) + slope;
        bwd_dinp[i] += local_grad * bwd_dout[i];
    }
}

// ---- The exact GELU, x·Φ(x) ----

const SQRT1_2: f32 = 0.7071067811865476;      // 1/√2
const INV_SQRT_2PI: f32 = 0.3989422804014327;  // 1/√(2π)
// Beyond |x| = 14, x·φ(x) < 2e-42 (below f32's normal range) and x² would only move on
// towards overflow: the backward takes gelu'(x) = Φ(x) there (1, or 0 to within a
// subnormal).
const PDF_CUTOFF: f32 = 14.0;

// erf(z) for |z| ≤ 1 as z·P(z²), P of degree 6 interpolating erf(z)/z at the Chebyshev
// nodes of z² ∈ [0, 1]: 1.2e-9 from erf in exact arithmetic, ~1.4e-7 after f32 rounding,
// and relatively accurate near 0.
fn erf_small(z: f32) -> f32 {
    let u = z * z;
    var p = 7.875875050430342e-05;
    p = -8.016864283299621e-04 + p * u;
    p = 5.1890874229765785e-03 + p * u;
    p = -2.685421201037881e-02 + p * u;
    p = 1.1283594715154313e-01 + p * u;
    p = -3.761262666671985e-01 + p * u;
    p = 1.1283791658483509 + p * u;
    return z * p;
}

// erfc(z) for z ≥ 1 by Numerical Recipes' Chebyshev fit (erfcc, §6.2):
//   erfc(z) ≈ t·exp(−z² + P(t)),  t = 1/(1 + z/2),
// relative error < 1.2e-7 in exact arithmetic, ≤ 9e-8 absolute on z ≥ 1 after f32
// rounding. 0 from z = 10 on (erfc(10) ≈ 2e-45 is not a normal f32), so exp never sees
// an argument that overflows its own computation.
fn erfc_tail(z: f32) -> f32 {
    if (z >= 10.0) {
        return 0.0;
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    var p = 0.17087277;
    p = -0.82215223 + p * t;
    p = 1.48851587 + p * t;
    p = -1.13520398 + p * t;
    p = 0.27886807 + p * t;
    p = -0.18628806 + p * t;
    p = 0.09678418 + p * t;
    p = 0.37409196 + p * t;
    p = 1.00002368 + p * t;
    return t * exp(-z * z - 1.26551223 + t * p);
}

// Φ(x) = 0.5·(1 + erf(x/√2)) = 0.5·erfc(−x/√2), the standard normal CDF. With
// z = |x|/√2: near 0 from erf_small; beyond, from erfc_tail, which keeps the far negative
// side relatively accurate (no 1 + erf cancellation) and makes Φ exactly 0 or 1 for
// |x| ≥ 10·√2.
fn gelu_cdf(x: f32) -> f32 {
    let z = abs(x) * SQRT1_2;
    if (z <= 1.0) {
        return 0.5 + 0.5 * erf_small(x * SQRT1_2);
    }
    let half_tail = 0.5 * erfc_tail(z);
    return select(half_tail, 1.0 - half_tail, x > 0.0);
}

@group(0) @binding(0) var<storage, read_write> erf_fwd_out: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> erf_fwd_inp: array<f32>;        // (N)
@group(0) @binding(2) var<uniform> erf_fwd_p: GeluParams;

// out = inp·Φ(inp). +inf gives +inf; large negative x give −0 (−inf gives NaN, as torch).
@compute @workgroup_size(WG)
fn gelu_erf_forward(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < erf_fwd_p.n) {
        let x = erf_fwd_inp[i];
        erf_fwd_out[i] = x * gelu_cdf(x);
    }
}

@group(0) @binding(0) var<storage, read_write> erf_bwd_dinp: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> erf_bwd_inp: array<f32>;         // (N)
@group(0) @binding(2) var<storage, read> erf_bwd_dout: array<f32>;        // (N)
@group(0) @binding(3) var<uniform> erf_bwd_p: GeluParams;

// dinp += gelu'(inp)·dout, with gelu'(x) = Φ(x) + x·φ(x), φ(x) = exp(−x²/2)/√(2π). For
// |x| ≥ PDF_CUTOFF the second term is taken as 0 (so ±inf give 1 and 0, not NaN).
// Gradients are added into; the training step zeroes them once per step.
@compute @workgroup_size(WG)
fn gelu_erf_backward(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < erf_bwd_p.n) {
        let x = erf_bwd_inp[i];
        let slope = x * INV_SQRT_2PI * exp(-0.5 * x * x);
        let local_grad = gelu_cdf(x) + select(slope, 0.0, abs(x) >= PDF_CUTOFF);
        erf_bwd_dinp[i] += local_grad * erf_bwd_dout[i];
    }
}
