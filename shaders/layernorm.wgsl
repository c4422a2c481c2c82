// layernorm.wgsl: layer normalisation over the channels of each row (B·T rows of C),
//   out = (inp − mean)·rstd·weight + bias,  rstd = 1/√(var + eps),
// saving mean and rstd for the backward, which walks it in reverse; and the same fused
// with the residual add before it (res = x + sub; out = norm(res)), which saves the pass
// that residual.wgsl would take over memory each way. Five entry points:
//   layernorm_forward                   one workgroup per row
//   residual_layernorm_forward          one workgroup per row: res, then out
//   layernorm_backward_dinp             one workgroup per row: dinp
//   residual_layernorm_backward_dinp    one workgroup per row: dres, then dx and dsub
//   layernorm_backward_dparams          one workgroup per 32 channels: dweight, dbias
// The per-row kernels reduce with a fixed-shape tree in workgroup memory (row_sum), and
// the forwards take two passes over the row (the mean, then the variance of x − mean),
// so results are reproducible to the bit and accurate at any C. Each fused kernel does
// the arithmetic of its unfused pair in the same order, so it gives the same bits.
// dweight and dbias are sums over all B·T rows: each column of invocations walks the
// rows in order with a stride of LANES, and the LANES partial sums are then added by a
// fixed tree. No atomics.
// Launchers: src/kernels/layernorm.rs. CPU references: src/reference/layernorm.rs.

// Mirrored by `LayernormParams` in src/kernels/layernorm.rs.
struct LayernormParams {
    rows: u32,    // B·T
    c: u32,       // channels C
    eps: f32,     // added to the variance; 1e-5 for GPT-2
    slab: u32,    // layernorm_backward_dparams: rows per slab
    direct: u32,  // layernorm_backward_dparams: 1: add into dweight, dbias; 0: partials
}

// Invocations per row in the per-row kernels: a power of two, at most 256. The launcher
// picks the smallest power of two ≥ C in [32, 256] on GPUs and 8 on CPU adapters (where
// each tree level's barrier is costly); each invocation takes channels li, li + WG, …
override WG: u32 = 256u;

var<workgroup> partial: array<vec2<f32>, 256>;

// The sum of `v` over the WG invocations of this workgroup, by a fixed tree. Must be
// called in uniform control flow; every invocation gets the total.
fn row_sum(li: u32, v: vec2<f32>) -> vec2<f32> {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (li < s) {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();  // partial is reused by the next call
    return total;
}

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;   // (B, T, C)
@group(0) @binding(1) var<storage, read_write> fwd_mean: array<f32>;  // (B, T)
@group(0) @binding(2) var<storage, read_write> fwd_rstd: array<f32>;  // (B, T)
@group(0) @binding(3) var<storage, read> fwd_inp: array<f32>;         // (B, T, C)
@group(0) @binding(4) var<storage, read> fwd_weight: array<f32>;      // (C)
@group(0) @binding(5) var<storage, read> fwd_bias: array<f32>;        // (C)
@group(0) @binding(6) var<uniform> fwd_p: LayernormParams;

@compute @workgroup_size(WG)
fn layernorm_forward(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= fwd_p.rows) {
        return;  // the whole workgroup leaves: control flow stays uniform
    }
    let c = fwd_p.c;
    let base = row * c;
    // The mean as pivot + mean(x − pivot), pivot the row's first element: sums of
    // differences stay small for off-centre rows (whatever WG sums them in what order),
    // and a constant row's mean is exact, so its variance is exactly 0.
    let pivot = fwd_inp[base];
    var s = 0.0;
    for (var i = li; i < c; i += WG) {
        s += fwd_inp[base + i] - pivot;
    }
    let m = pivot + row_sum(li, vec2(s, 0.0)).x / f32(c);
    var v = 0.0;
    for (var i = li; i < c; i += WG) {
        let d = fwd_inp[base + i] - m;
        v += d * d;
    }
    let variance = row_sum(li, vec2(v, 0.0)).x / f32(c);
    let r = 1.0 / sqrt(variance + fwd_p.eps);
    for (var i = li; i < c; i += WG) {
        let n = (fwd_inp[base + i] - m) * r;
        fwd_out[base + i] = n * fwd_weight[i] + fwd_bias[i];
    }
    if (li == 0u) {
        fwd_mean[row] = m;
        fwd_rstd[row] = r;
    }
}

@group(0) @binding(0) var<storage, read_write> rfwd_res: array<f32>;   // (B, T, C)
@group(0) @binding(1) var<storage, read_write> rfwd_out: array<f32>;   // (B, T, C)
@group(0) @binding(2) var<storage, read_write> rfwd_mean: array<f32>;  // (B, T)
@group(0) @binding(3) var<storage, read_write> rfwd_rstd: array<f32>;  // (B, T)
@group(0) @binding(4) var<storage, read> rfwd_x: array<f32>;           // (B, T, C)
@group(0) @binding(5) var<storage, read> rfwd_sub: array<f32>;         // (B, T, C)
@group(0) @binding(6) var<storage, read> rfwd_weight: array<f32>;      // (C)
@group(0) @binding(7) var<storage, read> rfwd_bias: array<f32>;        // (C)
@group(0) @binding(8) var<uniform> rfwd_p: LayernormParams;

// res = x + sub; then layernorm_forward of res, step for step. Each invocation writes
// its channels of res in the first pass and reads back only those in the later two
// (its own writes, so no barrier is needed); the pivot, res's first element, every
// invocation adds for itself (x + sub rounds the same wherever it is computed).
@compute @workgroup_size(WG)
fn residual_layernorm_forward(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= rfwd_p.rows) {
        return;  // the whole workgroup leaves: control flow stays uniform
    }
    let c = rfwd_p.c;
    let base = row * c;
    let pivot = rfwd_x[base] + rfwd_sub[base];
    var s = 0.0;
    for (var i = li; i < c; i += WG) {
        let x = rfwd_x[base + i] + rfwd_sub[base + i];
        rfwd_res[base + i] = x;
        s += x - pivot;
    }
    let m = pivot + row_sum(li, vec2(s, 0.0)).x / f32(c);
    var v = 0.0;
    for (var i = li; i < c; i += WG) {
        let d = rfwd_res[base + i] - m;
        v += d * d;
    }
    let variance = row_sum(li, vec2(v, 0.0)).x / f32(c);
    let r = 1.0 / sqrt(variance + rfwd_p.eps);
    for (var i = li; i < c; i += WG) {
        let n = (rfwd_res[base + i] - m) * r;
        rfwd_out[base + i] = n * rfwd_weight[i] + rfwd_bias[i];
    }
    if (li == 0u) {
        rfwd_mean[row] = m;
        rfwd_rstd[row] = r;
    }
}

@group(0) @binding(0) var<storage, read_write> bwd_dinp: array<f32>;  // (B, T, C)
@group(0) @binding(1) var<storage, read> bwd_dout: array<f32>;        // (B, T, C)
@group(0) @binding(2) var<storage, read> bwd_inp: array<f32>;         // (B, T, C)
@group(0) @binding(3) var<storage, read> bwd_weight: array<f32>;      // (C)
@group(0) @binding(4) var<storage, read> bwd_mean: array<f32>;        // (B, T)
@group(0) @binding(5) var<storage, read> bwd_rstd: array<f32>;        // (B, T)
@group(0) @binding(6) var<uniform> bwd_p: LayernormParams;

// With n = (x − mean)·rstd and g = weight·dout, per row:
//   dinp += rstd·(g − mean_C(g) − n·mean_C(g·n)).
// Added into, like every gradient; the training step zeroes them once per step.
@compute @workgroup_size(WG)
fn layernorm_backward_dinp(@builtin(workgroup_id) wg: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>,
                           @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= bwd_p.rows) {
        return;  // the whole workgroup leaves: control flow stays uniform
    }
    let c = bwd_p.c;
    let base = row * c;
    let m = bwd_mean[row];
    let r = bwd_rstd[row];
    var acc = vec2(0.0, 0.0);  // (Σ g, Σ g·n)
    for (var i = li; i < c; i += WG) {
        let g = bwd_weight[i] * bwd_dout[base + i];
        let n = (bwd_inp[base + i] - m) * r;
        acc += vec2(g, g * n);
    }
    let means = row_sum(li, acc) / f32(c);
    for (var i = li; i < c; i += WG) {
        let g = bwd_weight[i] * bwd_dout[base + i];
        let n = (bwd_inp[base + i] - m) * r;
        bwd_dinp[base + i] += (g - means.x - n * means.y) * r;
    }
}

@group(0) @binding(0) var<storage, read_write> rbwd_dx: array<f32>;    // (B, T, C)
@group(0) @binding(1) var<storage, read_write> rbwd_dsub: array<f32>;  // (B, T, C)
@group(0) @binding(2) var<storage, read_write> rbwd_dres: array<f32>;  // (B, T, C)
@group(0) @binding(3) var<storage, read> rbwd_dout: array<f32>;        // (B, T, C)
@group(0) @binding(4) var<storage, read> rbwd_res: array<f32>;         // (B, T, C)
@group(0) @binding(5) var<storage, read> rbwd_weight: array<f32>;      // (C)
@group(0) @binding(6) var<storage, read> rbwd_mean: array<f32>;        // (B, T)
@group(0) @binding(7) var<storage, read> rbwd_rstd: array<f32>;        // (B, T)
@group(0) @binding(8) var<uniform> rbwd_p: LayernormParams;

// layernorm_backward_dinp into dres, then residual_backward of dres, in one pass:
//   dres += rstd·(g − mean_C(g) − n·mean_C(g·n));  dx += dres;  dsub += dres.
// dres comes in holding what the rest of the graph added to res's gradient and leaves
// holding the whole of it, as after the two unfused kernels. The expressions are theirs,
// so the bits are too.
@compute @workgroup_size(WG)
fn residual_layernorm_backward_dinp(@builtin(workgroup_id) wg: vec3<u32>,
                                    @builtin(num_workgroups) nwg: vec3<u32>,
                                    @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= rbwd_p.rows) {
        return;  // the whole workgroup leaves: control flow stays uniform
    }
    let c = rbwd_p.c;
    let base = row * c;
    let m = rbwd_mean[row];
    let r = rbwd_rstd[row];
    var acc = vec2(0.0, 0.0);  // (Σ g, Σ g·n)
    for (var i = li; i < c; i += WG) {
        let g = rbwd_weight[i] * rbwd_dout[base + i];
        let n = (rbwd_res[base + i] - m) * r;
        acc += vec2(g, g * n);
    }
    let means = row_sum(li, acc) / f32(c);
    for (var i = li; i < c; i += WG) {
        let g = rbwd_weight[i] * rbwd_dout[base + i];
        let n = (rbwd_res[base + i] - m) * r;
        let d = rbwd_dres[base + i] + (g - means.x - n * means.y) * r;
        rbwd_dres[base + i] = d;
        rbwd_dx[base + i] += d;
        rbwd_dsub[base + i] += d;
    }
}

// Tile of layernorm_backward_dparams: CHANNELS consecutive channels × LANES row lanes.
const CHANNELS: u32 = 32u;
const LANES: u32 = 8u;

@group(0) @binding(0) var<storage, read_write> par_dweight: array<f32>;  // (C), or partials (S, C)
@group(0) @binding(1) var<storage, read_write> par_dbias: array<f32>;    // (C), or partials (S, C)
@group(0) @binding(2) var<storage, read> par_dout: array<f32>;           // (B, T, C)
@group(0) @binding(3) var<storage, read> par_inp: array<f32>;            // (B, T, C)
@group(0) @binding(4) var<storage, read> par_mean: array<f32>;           // (B, T)
@group(0) @binding(5) var<storage, read> par_rstd: array<f32>;           // (B, T)
@group(0) @binding(6) var<uniform> par_p: LayernormParams;

// dweight += Σ_rows n·dout; dbias += Σ_rows dout, in slabs of `slab` rows: workgroup
// (w, s) owns channels w·CHANNELS.. of slab s, and invocation (lx, ly) of it channel
// w·CHANNELS + lx and the slab's rows ly, ly + LANES, …, in order; the LANES partial sums
// of a channel are then added by a fixed tree. With one slab they are added into dweight
// and dbias, like every gradient; with S slabs, slab s writes row s of the partials
// (S, C) bound in their place, which `matmul_backward_bias` then adds up in slab order.
// (One workgroup per 32 channels walking all rows made 24 workgroups for GPT-2's C = 768:
// 0.14 ms at B·T = 4096 on an H200, 2026-11-30.)
@compute @workgroup_size(CHANNELS, LANES)
fn layernorm_backward_dparams(@builtin(workgroup_id) wg: vec3<u32>,
                              @builtin(local_invocation_id) lid: vec3<u32>,
                              @builtin(local_invocation_index) li: u32) {
    let c = par_p.c;
    let ch = wg.x * CHANNELS + lid.x;
    let r0 = wg.y * par_p.slab;
    let r1 = min(r0 + par_p.slab, par_p.rows);
    var acc = vec2(0.0, 0.0);  // (dweight, dbias)
    if (ch < c) {
        for (var row = r0 + lid.y; row < r1; row += LANES) {
            let d = par_dout[row * c + ch];
            let n = (par_inp[row * c + ch] - par_mean[row]) * par_rstd[row];
            acc += vec2(n * d, d);
        }
    }
    partial[li] = acc;  // li = ly·CHANNELS + lx
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s >> 1u) {
        if (lid.y < s) {
            partial[li] += partial[li + s * CHANNELS];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && ch < c) {
        if (par_p.direct == 1u) {
            par_dweight[ch] += partial[lid.x].x;
            par_dbias[ch] += partial[lid.x].y;
        } else {
            par_dweight[wg.y * c + ch] = partial[lid.x].x;
            par_dbias[wg.y * c + ch] = partial[lid.x].y;
        }
    }
}
