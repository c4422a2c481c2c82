// common.wgsl: helpers prepended to every shader of wgformer (see src/gpu/pipeline.rs).
// Keep it small: only what many op families share.

// Linear index of this workgroup in a 1-D launch the scheduler may have folded into 2-D
// (src/gpu/schedule.rs, fold_workgroups). Kernels must bound-check the result.
fn linear_workgroup(wg: vec3<u32>, num_wg: vec3<u32>) -> u32 {
    return wg.x + wg.y * num_wg.x;
}
