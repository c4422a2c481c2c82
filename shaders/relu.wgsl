// relu.wgsl: ReLU, out = max(x, 0), the activation of torch's Transformer feed-forward
// layers, and its backward. One element per invocation; 1-D launches the scheduler may
// fold into 2-D (linear_workgroup). The gradient at exactly 0 is 0, as torch's
// (threshold_backward passes dout only where x > 0); NaN inputs give NaN outputs (max
// is not used: its NaN behaviour is left to the driver) and a 0 gradient.
// Launchers: src/kernels/relu.rs. CPU references: src/reference/relu.rs.

// Mirrored by `ReluParams` in src/kernels/relu.rs.
struct ReluParams {
    n: u32,  // elements (B·T·FF in a feed-forward layer)
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> fwd_inp: array<f32>;        // (N)
@group(0) @binding(2) var<uniform> fwd_p: ReluParams;

// out = max(inp, 0); −0 and 0 give +0.
@compute @workgroup_size(WG)
fn relu_forward(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < fwd_p.n) {
        let x = fwd_inp[i];
        fwd_out[i] = select(x, 0.0, x <= 0.0);
    }
}

@group(0) @binding(0) var<storage, read_write> bwd_dinp: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> bwd_inp: array<f32>;         // (N)
@group(0) @binding(2) var<storage, read> bwd_dout: array<f32>;        // (N)
@group(0) @binding(3) var<uniform> bwd_p: ReluParams;

// dinp += dout where inp > 0 (nothing is added elsewhere, so an inf or NaN dout there
// does not reach dinp). Gradients are added into; the training step zeroes them once
// per step.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wg: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < bwd_p.n && bwd_inp[i] > 0.0) {
        bwd_dinp[i] += bwd_dout[i];
    }
}
