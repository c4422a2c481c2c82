// residual.wgsl: the residual connection of a transformer block, out = inp1 + inp2, and
// its backward, which hands dout to both branches. One element per invocation; 1-D
// launches the scheduler may fold into 2-D (linear_workgroup). Nothing is reduced.
// Launchers: src/kernels/residual.rs. CPU references: src/reference/residual.rs.

// Mirrored by `ResidualParams` in src/kernels/residual.rs.
struct ResidualParams {
    n: u32,  // elements (B·T·C)
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read> fwd_inp1: array<f32>;       // (N)
@group(0) @binding(2) var<storage, read> fwd_inp2: array<f32>;       // (N)
@group(0) @binding(3) var<uniform> fwd_p: ResidualParams;

// out = inp1 + inp2
@compute @workgroup_size(WG)
fn residual_forward(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < fwd_p.n) {
        fwd_out[i] = fwd_inp1[i] + fwd_inp2[i];
    }
}

@group(0) @binding(0) var<storage, read_write> bwd_dinp1: array<f32>;  // (N)
@group(0) @binding(1) var<storage, read_write> bwd_dinp2: array<f32>;  // (N)
@group(0) @binding(2) var<storage, read> bwd_dout: array<f32>;         // (N)
@group(0) @binding(3) var<uniform> bwd_p: ResidualParams;

// dinp1 += dout; dinp2 += dout. Gradients are added into, never overwritten; the
// training step zeroes them once per step.
@compute @workgroup_size(WG)
fn residual_backward(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < bwd_p.n) {
        let d = bwd_dout[i];
        bwd_dinp1[i] += d;
        bwd_dinp2[i] += d;
    }
}
