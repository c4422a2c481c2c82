// crossentropy.wgsl: the language-model loss, softmax fused with cross-entropy over rows
// of logits (B·T, V), as PyTorch's F.cross_entropy(logits, targets, ignore_index=-100)
// with reduction "mean":
//   crossentropy_forward           losses[n] = -log softmax(logits[n])[targets[n]]   (0 if ignored)
//   crossentropy_mean              stats = [mean, count, 1/count, sum] over counted positions
//   crossentropy_backward          dlogits[n] = (softmax(logits[n]) - onehot(targets[n])) · stats[2] · grad_scale
//   crossentropy_backward_inplace  the same, written over logits (saves a (B·T, V) buffer)
// grad_scale is 1 for one batch; 1/K when K micro-batches accumulate one step's gradient
// (each micro-batch's mean loss weighs 1/K, as nanoGPT's loss / gradient_accumulation_steps).
// One workgroup per row; each invocation folds the elements li, li + WG, ... of the row
// into a running (max, Σ exp(x - max)), then a fixed tree merges the WG pairs, so a row's
// result does not depend on timing. The mean is one workgroup summing in a fixed order.
// The same loss chunked over the vocabulary (crossentropy_chunk_*, at the end of this
// file) serves a classifier that never materialises the whole logits.
// A target of IGNORE_INDEX (-100) is not counted: loss 0, gradient row 0. Any other target
// outside [0, V) is a caller's bug the GPU cannot report: its loss and gradient row are NaN.
// Rows of logits at GPT-2 scale exceed one binding, so launchers bind a chunk of rows and
// pass its first row in `row_offset`; losses and targets are bound whole.
// Launchers: src/kernels/crossentropy.rs. CPU references: src/reference/crossentropy.rs.

struct CrossentropyParams {
    v: u32,           // V: elements per row of logits
    rows: u32,        // rows of logits in this launch's chunk
    row_offset: u32,  // index among all B·T rows of the chunk's first row
    bt: u32,          // B·T: length of losses and targets
    grad_scale: f32,  // backward only: d(step loss)/d(this mean loss), 1/K over K micro-batches
}

// Invocations per row: 256 on GPUs, 8 on CPU adapters (the launcher's choice), where
// the tree's barriers cost more than a longer walk along the row.
override WG: u32 = 256u;
const IGNORE_INDEX: i32 = -100;
// Start of a running max: finite, so merging two empty parts gives exp(0)·0, never NaN,
// and exp(-inf - LOWEST) is 0 for -inf logits.
const LOWEST: f32 = -3.4028234663852886e38;  // -f32::MAX, exactly (Tint rejects a rounded literal)

var<workgroup> red_m: array<f32, WG>;  // running max of each invocation's part of a row
var<workgroup> red_s: array<f32, WG>;  // Σ exp(x - red_m) of that part
var<workgroup> red_n: array<u32, WG>;  // counted positions (crossentropy_mean)

// A quiet NaN. `zero` must be a run-time 0: a NaN from a const-expression is a
// shader-creation error in WGSL.
fn nan(zero: u32) -> f32 {
    return bitcast<f32>(0x7fc00000u | zero);
}

// Fold one logit x into a running (max, Σ exp(x - max)).
fn online(ms: vec2<f32>, x: f32) -> vec2<f32> {
    if (x > ms.x) {
        return vec2<f32>(x, ms.y * exp(ms.x - x) + 1.0);
    }
    return vec2<f32>(ms.x, ms.y + exp(x - ms.x));
}

// Merge two running (max, Σ exp(x - max)) of disjoint parts of a row.
fn merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// Tree-merge each invocation's (max, Σ exp) into the row's, returned to every invocation.
// Invocation li merges li + stride into li for stride = WG/2, ..., 1: a fixed order.
// Must be called in uniform control flow.
fn row_stats(li: u32, ms: vec2<f32>) -> vec2<f32> {
    red_m[li] = ms.x;
    red_s[li] = ms.y;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            let merged = merge(vec2<f32>(red_m[li], red_s[li]),
                               vec2<f32>(red_m[li + stride], red_s[li + stride]));
            red_m[li] = merged.x;
            red_s[li] = merged.y;
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_m[0], red_s[0]);
    workgroupBarrier();  // every invocation has read the result before red_* is reused
    return r;
}

// ∂(mean loss)/∂logit of one element: (softmax - onehot) · dloss, st = the row's stats.
fn dlogit(x: f32, st: vec2<f32>, is_target: bool, dloss: f32) -> f32 {
    let p = exp(x - st.x) / st.y;
    return (p - select(0.0, 1.0, is_target)) * dloss;
}

// ---- forward ----

@group(0) @binding(0) var<storage, read_write> fwd_losses: array<f32>;  // (B·T)
@group(0) @binding(1) var<storage, read> fwd_logits: array<f32>;        // (rows, V): this chunk
@group(0) @binding(2) var<storage, read> fwd_targets: array<i32>;       // (B·T)
@group(0) @binding(3) var<uniform> fwd_p: CrossentropyParams;

@compute @workgroup_size(WG)
fn crossentropy_forward(@builtin(workgroup_id) wg: vec3<u32>,
                        @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= fwd_p.rows) { return; }
    let v = fwd_p.v;
    let n = fwd_p.row_offset + row;
    let tgt = fwd_targets[n];
    if (tgt == IGNORE_INDEX) {
        if (li == 0u) { fwd_losses[n] = 0.0; }
        return;
    }
    let base = row * v;
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var i = li; i < v; i += WG) {
        ms = online(ms, fwd_logits[base + i]);
    }
    let st = row_stats(li, ms);
    if (li == 0u) {
        var loss = nan(v & 0u);
        if (tgt >= 0 && u32(tgt) < v) {
            // -log(exp(x_t - max) / Σ) = (max - x_t) + log Σ
            loss = (st.x - fwd_logits[base + u32(tgt)]) + log(st.y);
        }
        fwd_losses[n] = loss;
    }
}

// ---- mean over counted positions ----

@group(0) @binding(0) var<storage, read_write> mean_stats: array<f32>;  // (4): mean, count, 1/count, sum
@group(0) @binding(1) var<storage, read> mean_losses: array<f32>;       // (B·T)
@group(0) @binding(2) var<storage, read> mean_targets: array<i32>;      // (B·T)
@group(0) @binding(3) var<uniform> mean_p: CrossentropyParams;

// One workgroup: invocation li sums positions li, li + WG, ... in order, then a fixed
// tree adds the WG partial sums. With no counted position, every stat is 0 (not NaN),
// so the backward pass writes zero gradients.
@compute @workgroup_size(WG)
fn crossentropy_mean(@builtin(local_invocation_index) li: u32) {
    var sum = 0.0;
    var count = 0u;
    for (var n = li; n < mean_p.bt; n += WG) {
        if (mean_targets[n] != IGNORE_INDEX) {
            sum += mean_losses[n];
            count += 1u;
        }
    }
    red_s[li] = sum;
    red_n[li] = count;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li < stride) {
            red_s[li] += red_s[li + stride];
            red_n[li] += red_n[li + stride];
        }
        workgroupBarrier();
    }
    if (li == 0u) {
        let total = red_s[0];
        let c = f32(red_n[0]);
        let inv = select(0.0, 1.0 / c, red_n[0] > 0u);
        mean_stats[0] = total * inv;
        mean_stats[1] = c;
        mean_stats[2] = inv;
        mean_stats[3] = total;
    }
}

// ---- backward ----
// Unlike every other backward kernel of wgformer, these WRITE dlogits (=), not add into
// it: the logits have no other consumer, so there is nothing to accumulate, and writing
// lets the in-place form reuse the logits buffer. dloss = stats[2] · grad_scale, with
// stats[2] = 1/count read on the GPU, so a training step needs no readback between the
// loss and its gradient.

@group(0) @binding(0) var<storage, read_write> bwd_dlogits: array<f32>;  // (rows, V): this chunk
@group(0) @binding(1) var<storage, read> bwd_logits: array<f32>;         // (rows, V): this chunk
@group(0) @binding(2) var<storage, read> bwd_targets: array<i32>;        // (B·T)
@group(0) @binding(3) var<storage, read> bwd_stats: array<f32>;          // (4): from crossentropy_mean
@group(0) @binding(4) var<uniform> bwd_p: CrossentropyParams;

@compute @workgroup_size(WG)
fn crossentropy_backward(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= bwd_p.rows) { return; }
    let v = bwd_p.v;
    let base = row * v;
    let tgt = bwd_targets[bwd_p.row_offset + row];
    if (tgt == IGNORE_INDEX) {
        for (var i = li; i < v; i += WG) { bwd_dlogits[base + i] = 0.0; }
        return;
    }
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var i = li; i < v; i += WG) {
        ms = online(ms, bwd_logits[base + i]);
    }
    let st = row_stats(li, ms);
    var dloss = bwd_stats[2] * bwd_p.grad_scale;
    if (tgt < 0 || u32(tgt) >= v) { dloss = nan(v & 0u); }
    for (var i = li; i < v; i += WG) {
        bwd_dlogits[base + i] = dlogit(bwd_logits[base + i], st, i32(i) == tgt, dloss);
    }
}

// In place: logits in, dlogits out, in one buffer. Invocation li reads and then writes
// only the elements li, li + WG, ... of its row, and all reads for the row's stats
// happen before the barriers of row_stats, so no invocation sees another's write.
@group(0) @binding(0) var<storage, read_write> bwdi_logits: array<f32>;  // (rows, V): logits in, dlogits out
@group(0) @binding(1) var<storage, read> bwdi_targets: array<i32>;       // (B·T)
@group(0) @binding(2) var<storage, read> bwdi_stats: array<f32>;         // (4): from crossentropy_mean
@group(0) @binding(3) var<uniform> bwdi_p: CrossentropyParams;

@compute @workgroup_size(WG)
fn crossentropy_backward_inplace(@builtin(workgroup_id) wg: vec3<u32>,
                                 @builtin(num_workgroups) nwg: vec3<u32>,
                                 @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= bwdi_p.rows) { return; }
    let v = bwdi_p.v;
    let base = row * v;
    let tgt = bwdi_targets[bwdi_p.row_offset + row];
    if (tgt == IGNORE_INDEX) {
        for (var i = li; i < v; i += WG) { bwdi_logits[base + i] = 0.0; }
        return;
    }
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var i = li; i < v; i += WG) {
        ms = online(ms, bwdi_logits[base + i]);
    }
    let st = row_stats(li, ms);
    var dloss = bwdi_stats[2] * bwdi_p.grad_scale;
    if (tgt < 0 || u32(tgt) >= v) { dloss = nan(v & 0u); }
    for (var i = li; i < v; i += WG) {
        bwdi_logits[base + i] = dlogit(bwdi_logits[base + i], st, i32(i) == tgt, dloss);
    }
}

// ---- chunked over the vocabulary ----
// The loss of logits that never exist whole: the classifier computes them Vc columns at
// a time, a logits chunk (rows, Vc) holding columns [v0, v0 + Vc) of each row, and
//   crossentropy_chunk_forward           folds the chunk into each row's running stats
//                                        (max, Σ exp(x - max), target's logit): the
//                                        online softmax, rescaling Σ when the max grows
//   crossentropy_chunk_finish            losses[n] = (max - logit[target]) + log Σ, as
//                                        crossentropy_forward writes them, so
//                                        crossentropy_mean follows unchanged
//   crossentropy_chunk_backward_inplace  a recomputed chunk becomes its dlogits, in place:
//                                        (exp(x - max) / Σ - onehot) · stats[2] · grad_scale
// The chunk at v0 = 0 starts the running stats, so nothing needs clearing between steps.
// A row whose target is IGNORE_INDEX is skipped by the forward (its stats are never read),
// gets loss 0 and a zero gradient; a target outside [0, V) gives NaN, as above.
// Launchers: src/kernels/crossentropy.rs. CPU references: src/reference/crossentropy.rs.

struct ChunkParams {
    v: u32,           // V: the whole vocabulary
    v0: u32,          // first vocabulary column of this chunk
    vc: u32,          // Vc: columns in this chunk (elements per row of the logits chunk)
    rows: u32,        // rows of the logits chunk in this launch
    row_offset: u32,  // index among all B·T rows of the launch's first row
    bt: u32,          // B·T: rows of row_stats, losses and targets
    grad_scale: f32,  // backward only: d(step loss)/d(this mean loss), 1/K over K micro-batches
}

@group(0) @binding(0) var<storage, read_write> cf_row_stats: array<f32>;  // (B·T, 3): max, Σ exp(x - max), target's logit
@group(0) @binding(1) var<storage, read> cf_logits: array<f32>;           // (rows, Vc): columns [v0, v0 + Vc) of this launch's rows
@group(0) @binding(2) var<storage, read> cf_targets: array<i32>;          // (B·T)
@group(0) @binding(3) var<uniform> cf_p: ChunkParams;

@compute @workgroup_size(WG)
fn crossentropy_chunk_forward(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= cf_p.rows) { return; }
    let vc = cf_p.vc;
    let n = cf_p.row_offset + row;
    let tgt = cf_targets[n];
    if (tgt == IGNORE_INDEX) { return; }
    let base = row * vc;
    var ms = vec2<f32>(LOWEST, 0.0);
    for (var i = li; i < vc; i += WG) {
        ms = online(ms, cf_logits[base + i]);
    }
    let st = row_stats(li, ms);
    if (li == 0u) {
        var run = st;
        var xt = 0.0;
        if (cf_p.v0 != 0u) {
            run = merge(vec2<f32>(cf_row_stats[3u * n], cf_row_stats[3u * n + 1u]), st);
            xt = cf_row_stats[3u * n + 2u];
        }
        // tgt - v0 as i32: a target left of the chunk is negative, never in range.
        let col = tgt - i32(cf_p.v0);
        if (col >= 0 && u32(col) < vc) {
            xt = cf_logits[base + u32(col)];
        }
        cf_row_stats[3u * n] = run.x;
        cf_row_stats[3u * n + 1u] = run.y;
        cf_row_stats[3u * n + 2u] = xt;
    }
}

@group(0) @binding(0) var<storage, read_write> cl_losses: array<f32>;  // (B·T)
@group(0) @binding(1) var<storage, read> cl_row_stats: array<f32>;     // (B·T, 3): after the last chunk
@group(0) @binding(2) var<storage, read> cl_targets: array<i32>;       // (B·T)
@group(0) @binding(3) var<uniform> cl_p: ChunkParams;

// One invocation per row.
@compute @workgroup_size(WG)
fn crossentropy_chunk_finish(@builtin(workgroup_id) wg: vec3<u32>,
                             @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) li: u32) {
    let n = linear_workgroup(wg, nwg) * WG + li;
    if (n >= cl_p.bt) { return; }
    let tgt = cl_targets[n];
    if (tgt == IGNORE_INDEX) {
        cl_losses[n] = 0.0;
        return;
    }
    var loss = nan(cl_p.v & 0u);
    if (tgt >= 0 && u32(tgt) < cl_p.v) {
        loss = (cl_row_stats[3u * n] - cl_row_stats[3u * n + 2u]) + log(cl_row_stats[3u * n + 1u]);
    }
    cl_losses[n] = loss;
}

// In place, like crossentropy_backward_inplace: each element is read, then written, by
// one invocation; the row's (max, Σ) are final, so no reduction and no barrier.
@group(0) @binding(0) var<storage, read_write> cb_logits: array<f32>;  // (rows, Vc): logits chunk in, dlogits chunk out
@group(0) @binding(1) var<storage, read> cb_targets: array<i32>;       // (B·T)
@group(0) @binding(2) var<storage, read> cb_row_stats: array<f32>;     // (B·T, 3): from the forward's last chunk
@group(0) @binding(3) var<storage, read> cb_stats: array<f32>;         // (4): from crossentropy_mean
@group(0) @binding(4) var<uniform> cb_p: ChunkParams;

@compute @workgroup_size(WG)
fn crossentropy_chunk_backward_inplace(@builtin(workgroup_id) wg: vec3<u32>,
                                       @builtin(num_workgroups) nwg: vec3<u32>,
                                       @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= cb_p.rows) { return; }
    let vc = cb_p.vc;
    let base = row * vc;
    let n = cb_p.row_offset + row;
    let tgt = cb_targets[n];
    if (tgt == IGNORE_INDEX) {
        for (var i = li; i < vc; i += WG) { cb_logits[base + i] = 0.0; }
        return;
    }
    let st = vec2<f32>(cb_row_stats[3u * n], cb_row_stats[3u * n + 1u]);
    var dloss = cb_stats[2] * cb_p.grad_scale;
    if (tgt < 0 || u32(tgt) >= cb_p.v) { dloss = nan(vc & 0u); }
    let col = tgt - i32(cb_p.v0);
    for (var i = li; i < vc; i += WG) {
        cb_logits[base + i] = dlogit(cb_logits[base + i], st, i32(i) == col, dloss);
    }
}
