// adamw.wgsl: one AdamW step on one parameter tensor, in place, as torch.optim.AdamW
// (decoupled weight decay, bias correction, f32 master weights), in PyTorch's order:
//   g      = grad · clip_scale
//   m      = β1·m + (1−β1)·g
//   v      = β2·v + (1−β2)·g²
//   param  = param · (1 − lr·wd)
//   denom  = sqrt(v) / sqrt(1−β2^t) + eps
//   param  = param − (lr / (1−β1^t)) · m / denom
// One element per invocation; each invocation owns param[i], m[i], v[i].
// Values that change per step (lr, t and the bias corrections) are read from the step
// buffer, which the host rewrites before each submit, so one recorded schedule serves
// every step; clip_scale is read from the gradnorm state (shaders/gradnorm.wgsl) on the
// GPU, and so is the skip flag (norm_state[4], set by shaders/lossscale.wgsl when a
// mixed-precision step overflowed). Per parameter group values (weight decay) are per-launch params.
// Launcher: src/kernels/adamw.rs. CPU reference: src/reference/adamw.rs.

// Mirrored by `AdamwStep` in src/kernels/adamw.rs (the host computes the bias
// corrections in f64, as PyTorch does in Python floats).
struct AdamwStep {
    lr: f32,         // learning rate of this step
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,  // lr / (1 − β1^t)
    bc2_sqrt: f32,   // sqrt(1 − β2^t)
    t: u32,          // step number, from 1 (informational)
    _pad: u32,
}

// Mirrored by `AdamwParams` in src/kernels/adamw.rs.
struct AdamwParams {
    n: u32,             // elements of this chunk of the tensor
    weight_decay: f32,  // decoupled decay; 0 for biases and layernorm weights
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> param: array<f32>;  // (n), updated in place
@group(0) @binding(1) var<storage, read_write> m: array<f32>;      // (n) first moment
@group(0) @binding(2) var<storage, read_write> v: array<f32>;      // (n) second moment
@group(0) @binding(3) var<storage, read> grad: array<f32>;         // (n)
@group(0) @binding(4) var<storage, read> step: AdamwStep;          // (8 words), per step
@group(0) @binding(5) var<storage, read> norm_state: array<f32>;   // (5): [1] is clip_scale, [4] skip
@group(0) @binding(6) var<uniform> p: AdamwParams;

@compute @workgroup_size(WG)
fn adamw_update(@builtin(workgroup_id) wg: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    // A step the mixed path's loss scaling skips (an f16 overflow) changes nothing.
    if (i >= p.n || norm_state[4] != 0.0) {
        return;
    }
    let g = grad[i] * norm_state[1];
    let mi = step.beta1 * m[i] + (1.0 - step.beta1) * g;
    let vi = step.beta2 * v[i] + (1.0 - step.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let decayed = param[i] * (1.0 - step.lr * p.weight_decay);
    let denom = sqrt(vi) / step.bc2_sqrt + step.eps;
    param[i] = decayed - step.step_size * (mi / denom);
}
