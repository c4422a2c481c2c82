// tanh.wgsl: tanh and its backward, for BERT's pooler (dense → tanh on the [CLS] row).
// One element per invocation; 1-D launches the scheduler may fold into 2-D
// (linear_workgroup). WGSL's builtin tanh is not used: some drivers compute it as
// (e^2x − 1)/(e^2x + 1), which is inf/inf = NaN for large x and loses relative accuracy
// near 0. tanh_value instead takes an odd polynomial below |x| = 0.55 and
// (1 − e^−2|x|)/(1 + e^−2|x|) above, with |x| clamped to 15 (where tanh is ±1 in f32):
// every finite or infinite x gives a finite result, ±1 exactly from |x| ≈ 9 on.
// The backward takes the forward's output (as torch's tanh_backward), not its input.
// Launchers: src/kernels/tanh.rs. CPU references: src/reference/tanh.rs.

// Mirrored by `TanhParams` in src/kernels/tanh.rs.
struct TanhParams {
    n: u32,  // elements (B·C for the pooler)
}

const WG: u32 = 256u;
// Below this |x|, the polynomial; from it on, the exponential form (whose 1 − e^−2|x|
// would cancel digits nearer 0).
const TANH_POLY_END: f32 = 0.55;
const TANH_CLAMP: f32 = 15.0;

// tanh(x): x·P(x²) for |x| < 0.55, P of degree 5 interpolating tanh(x)/x at the
// Chebyshev nodes of x² ∈ [0, 0.3025] (9.5e-10 relative in exact arithmetic, ~1 ulp in
// f32); beyond, from e^−2|x|, ~2 ulp. NaN stays NaN (no comparison holds for it).
fn tanh_value(x: f32) -> f32 {
    let a = abs(x);
    if (a < TANH_POLY_END) {
        let u = x * x;
        var p = -6.233633468950434e-03;
        p = 2.103821479090621e-02 + p * u;
        p = -5.384231924236487e-02 + p * u;
        p = 1.3332456536377793e-01 + p * u;
        p = -3.333331079774625e-01 + p * u;
        p = 9.999999990548016e-01 + p * u;
        return x * p;
    }
    if (a >= TANH_POLY_END) {
        let t = exp(-2.0 * min(a, TANH_CLAMP));
        let r = (1.0 - t) / (1.0 + t);
        return select(-r, r, x > 0.0);
    }
    return x;
}

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> fwd_inp: array<f32>;        // (N)
@group(0) @binding(2) var<uniform> fwd_p: TanhParams;

// out = tanh(inp)
@compute @workgroup_size(WG)
fn tanh_forward(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < fwd_p.n) {
        fwd_out[i] = tanh_value(fwd_inp[i]);
    }
}

@group(0) @binding(0) var<storage, read_write> bwd_dinp: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> bwd_out: array<f32>;         // (N) the forward's out
@group(0) @binding(2) var<storage, read> bwd_dout: array<f32>;        // (N)
@group(0) @binding(3) var<uniform> bwd_p: TanhParams;

// dinp += dout·(1 − out²), as tanh' = 1 − tanh²; where out = ±1 exactly, 0 is added.
// Gradients are added into; the training step zeroes them once per step.
@compute @workgroup_size(WG)
fn tanh_backward(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < bwd_p.n) {
        let y = bwd_out[i];
        bwd_dinp[i] += bwd_dout[i] * (1.0 - y * y);
    }
}
