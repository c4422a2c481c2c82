// dropout.wgsl: inverted dropout in place, with a counter-based RNG instead of a stored
// mask, so the backward pass recomputes the forward's mask and no mask buffer exists:
//   dropout_forward   x[i]  = keep(i) ? x[i]  · scale : 0     (activations)
//   dropout_backward  dx[i] = keep(i) ? dx[i] · scale : 0     (their gradients)
// with scale = 1 / (1 - p) and keep(i) = dropout_bits(stream, i) >> 8 >= threshold, where
// threshold = round(p · 2^24). The 32 random bits of element i are a hash of
// (seed, counter, site, i): seed is the run's, counter the micro-step (step · K + micro),
// site names the dropout location (0 the embeddings, 1 + 2l layer l's attention
// projection, 2 + 2l its MLP projection). Integer hashing only, so every adapter draws
// the same mask for the same seed, and a resumed run draws the masks it would have.
// Both entries WRITE in place: dropout_backward turns the gradient of the dropped
// activation into the gradient of the undropped one (like crossentropy's in-place
// backward, an exception to the `+=` convention of backward kernels).
// One element per invocation; tensors larger than one binding are launched per chunk,
// with the chunk's first element in `offset` so the hash sees global indices.
// Launchers: src/kernels/dropout.rs. CPU references: src/reference/dropout.rs.

// Mirrored by `DropoutStep` in src/kernels/dropout.rs; rewritten by the host before each
// submit, so one recorded schedule draws new masks every micro-step.
struct DropoutStep {
    seed_lo: u32,  // low 32 bits of the run's seed
    seed_hi: u32,  // high 32 bits
    counter: u32,  // micro-step: step · K + micro-batch
    _pad: u32,
}

// Mirrored by `DropoutParams` in src/kernels/dropout.rs.
struct DropoutParams {
    n: u32,          // elements of this chunk
    offset: u32,     // global index of the chunk's first element
    site: u32,       // dropout location (see above)
    threshold: u32,  // round(p · 2^24): 24-bit draws below it are dropped
    scale: f32,      // 1 / (1 - p)
}

const WG: u32 = 256u;

// Chris Wellons' lowbias32: a 32-bit integer hash with very low bias.
fn lowbias32(x: u32) -> u32 {
    var h = x;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

// The two stream keys of one (seed, counter, site): each word absorbed by one hash.
fn dropout_stream(st: DropoutStep, site: u32) -> vec2<u32> {
    var h = lowbias32(st.seed_lo ^ 0x243f6a88u);
    h = lowbias32(h ^ st.seed_hi);
    h = lowbias32(h ^ st.counter);
    let k1 = lowbias32(h ^ site);
    let k2 = lowbias32(k1 ^ 0x85a308d3u);
    return vec2<u32>(k1, k2);
}

// 32 random bits of element i of a stream.
fn dropout_bits(key: vec2<u32>, i: u32) -> u32 {
    return lowbias32(lowbias32(i ^ key.x) ^ key.y);
}

// ---- forward ----

@group(0) @binding(0) var<storage, read_write> fwd_x: array<f32>;  // (n): activations, in place
@group(0) @binding(1) var<storage, read> fwd_step: DropoutStep;    // (4 words), per micro-step
@group(0) @binding(2) var<uniform> fwd_p: DropoutParams;

@compute @workgroup_size(WG)
fn dropout_forward(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i >= fwd_p.n) { return; }
    let key = dropout_stream(fwd_step, fwd_p.site);
    let keep = (dropout_bits(key, fwd_p.offset + i) >> 8u) >= fwd_p.threshold;
    fwd_x[i] = select(0.0, fwd_x[i] * fwd_p.scale, keep);
}

// ---- backward ----

@group(0) @binding(0) var<storage, read_write> bwd_dx: array<f32>;  // (n): gradients, in place
@group(0) @binding(1) var<storage, read> bwd_step: DropoutStep;     // (4 words), per micro-step
@group(0) @binding(2) var<uniform> bwd_p: DropoutParams;

@compute @workgroup_size(WG)
fn dropout_backward(@builtin(workgroup_id) wg: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i >= bwd_p.n) { return; }
    let key = dropout_stream(bwd_step, bwd_p.site);
    let keep = (dropout_bits(key, bwd_p.offset + i) >> 8u) >= bwd_p.threshold;
    bwd_dx[i] = select(0.0, bwd_dx[i] * bwd_p.scale, keep);
}
