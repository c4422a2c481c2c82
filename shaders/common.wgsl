// common.wgsl: helpers prepended to every shader of wgformer (see src/gpu/pipeline.rs).
// Keep it small: only what many op families share.

// Linear index of this workgroup in a 1-D launch the scheduler may have folded into 2-D
// (src/gpu/schedule.rs, fold_workgroups). Kernels must bound-check the result.
fn linear_workgroup(wg: vec3<u32>, num_wg: vec3<u32>) -> u32 {
    return wg.x + wg.y * num_wg.x;
}

// GPT-2's GELU (tanh approximation, Hugging Face `gelu_new`):
//   gelu_new(x) = 0.5·x·(1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³).
// Shared by shaders/gelu.wgsl (gelu_forward, gelu_backward) and the matmul shaders (their
// A_GELU form, which applies it to a as it loads it): one definition, so the fused
// matmul and gelu_forward followed by the plain matmul give the same bits.
// tanh's argument is clamped to ±15: some drivers compute tanh as (e^2u − 1)/(e^2u + 1),
// which is inf/inf = NaN for large u, and x³ overflows to ±inf for |x| > ~7e12. Large
// finite |x| therefore give gelu(x) = x or ±0, never NaN.
const GELU_SCALE: f32 = 0.7978845608028654;  // √(2/π)
const GELU_CUBIC: f32 = 0.044715;
const GELU_TANH_CLAMP: f32 = 15.0;

// tanh(u) for u = √(2/π)·(x + 0.044715·x³), clamped: beyond |u| = 15 it is exactly ±1
// (as it is in f32 from |u| ≈ 9 on), so the driver's tanh never sees a large argument.
fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
    if (abs(u) >= GELU_TANH_CLAMP) {
        return sign(u);
    }
    return tanh(u);
}

fn gelu_new(x: f32) -> f32 {
    return 0.5 * x * (1.0 + gelu_tanh(x));
}
