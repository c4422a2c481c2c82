// gradnorm.wgsl: the global L2 norm of all parameter gradients and the clip scale of
// torch.nn.utils.clip_grad_norm_, in two deterministic passes (no atomics):
//   gradnorm_partial  partials[slot_offset + w] = Σ grad² over block w of one gradient
//   gradnorm_finish   norm_state = [norm, clip_scale, Σ grad², max_norm, 0] from all partials
//                     (word 4, skip, is set by shaders/lossscale.wgsl on the mixed path)
// Pass 1 runs once per gradient tensor (once per binding chunk of a large one); workgroup
// w sums the block of WG·ITEMS elements starting at w·WG·ITEMS and alone writes its slot
// of the shared partials buffer. Pass 2 is one workgroup that sums every slot in a fixed
// order, so the same gradients give the same bits on every run.
// clip_scale = min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0 (no clipping).
// It stays on the GPU: shaders/adamw.wgsl reads it from norm_state. The gradients are
// not touched; the scale is applied where AdamW reads them.
// Launchers: src/kernels/gradnorm.rs. CPU reference: src/reference/gradnorm.rs.

// Mirrored by `GradnormPartialParams` in src/kernels/gradnorm.rs.
struct GradnormPartialParams {
    n: u32,            // elements of this chunk of the gradient
    slot_offset: u32,  // slot of partials written by this launch's workgroup 0
}

// Mirrored by `GradnormFinishParams` in src/kernels/gradnorm.rs.
struct GradnormFinishParams {
    n_partials: u32,  // slots of partials to sum
    max_norm: f32,    // clip threshold; <= 0 turns clipping off (clip_scale = 1)
}

const WG: u32 = 256u;
// Elements each invocation of gradnorm_partial squares and adds: a workgroup covers
// WG·ITEMS elements. The launcher passes the same value it plans slots with.
override ITEMS: u32 = 16u;

var<workgroup> sums: array<f32, 256>;  // (WG): one running sum per invocation

// Σ x over the workgroup, as a fixed binary tree (the same order on every run).
// Every invocation must call it (it holds barriers); all get the total.
fn workgroup_sum(li: u32, x: f32) -> f32 {
    sums[li] = x;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (li < stride) {
            sums[li] = sums[li] + sums[li + stride];
        }
        workgroupBarrier();
    }
    return sums[0];
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;  // (n_partials), all tensors
@group(0) @binding(1) var<storage, read> grad: array<f32>;            // (n): one chunk of one gradient
@group(0) @binding(2) var<uniform> partial_p: GradnormPartialParams;

@compute @workgroup_size(WG)
fn gradnorm_partial(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let w = linear_workgroup(wg, nwg);
    let block = WG * ITEMS;
    // Neighbouring invocations read neighbouring elements: element start + k·WG + li.
    let start = w * block;
    var acc = 0.0;
    for (var k = 0u; k < ITEMS; k++) {
        let i = start + k * WG + li;
        if (i < partial_p.n) {
            let g = grad[i];
            acc = fma(g, g, acc);
        }
    }
    let total = workgroup_sum(li, acc);
    // An empty chunk still owns one slot (written 0); a folded grid's extra workgroups none.
    let slots = max(1u, (partial_p.n + block - 1u) / block);
    if (li == 0u && w < slots) {
        partials[partial_p.slot_offset + w] = total;
    }
}

@group(0) @binding(0) var<storage, read_write> norm_state: array<f32>;  // (5): norm, clip_scale, Σ grad², max_norm, skip
@group(0) @binding(1) var<storage, read> finish_partials: array<f32>;   // (n_partials)
@group(0) @binding(2) var<uniform> finish_p: GradnormFinishParams;

@compute @workgroup_size(WG)
fn gradnorm_finish(@builtin(local_invocation_index) li: u32) {
    // Invocation li adds slots li, li + WG, li + 2·WG, ... in that order.
    var acc = 0.0;
    for (var j = li; j < finish_p.n_partials; j += WG) {
        acc += finish_partials[j];
    }
    let sum_sq = workgroup_sum(li, acc);
    if (li == 0u) {
        let norm = sqrt(sum_sq);
        var clip_scale = 1.0;
        if (finish_p.max_norm > 0.0) {
            clip_scale = min(1.0, finish_p.max_norm / (norm + 1e-6));
        }
        norm_state[0] = norm;
        norm_state[1] = clip_scale;
        norm_state[2] = sum_sq;
        norm_state[3] = finish_p.max_norm;
        norm_state[4] = 0.0;  // skip: set only by the mixed path's loss_scale_update
    }
}
