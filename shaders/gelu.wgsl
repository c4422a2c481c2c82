// gelu.wgsl: GELU with the tanh approximation (Hugging Face `gelu_new`, GPT-2's MLP)
//   gelu(x) = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³)
// and its backward. One element per invocation; 1-D launches the scheduler may fold
// into 2-D (linear_workgroup). tanh's argument is clamped to ±15 (gelu_tanh): some
// drivers compute tanh as (e^2u − 1)/(e^2u + 1), which is inf/inf = NaN for large u, and
// x³ overflows to ±inf for |x| > ~7e12. Large finite |x| therefore give gelu(x) = x or
// ±0 and gelu'(x) = 1 or 0, never NaN.
// Launchers: src/kernels/gelu.rs. CPU references: src/reference/gelu.rs.

// Mirrored by `GeluParams` in src/kernels/gelu.rs.
struct GeluParams {
    n: u32,  // elements (B·T·4C in GPT-2's MLP)
}

const WG: u32 = 256u;
const GELU_SCALE: f32 = 0.7978845608028654;  // √(2/π)
const GELU_CUBIC: f32 = 0.044715;
const TANH_CLAMP: f32 = 15.0;

// tanh(u) for u = √(2/π)·(x + 0.044715·x³), clamped: beyond |u| = 15 it is exactly ±1
// (as it is in f32 from |u| ≈ 9 on), so the driver's tanh never sees a large argument.
fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
    if (abs(u) >= TANH_CLAMP) {
        return sign(u);
    }
    return tanh(u);
}

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
        let x = fwd_inp[i];
        fwd_out[i] = 0.5 * x * (1.0 + gelu_tanh(x));
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
