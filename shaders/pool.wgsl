// pool.wgsl: sentence embeddings as sentence-transformers makes them from a BERT
// encoder's last hidden state: the mean of the token vectors over the attention mask
// (mean_pool_forward), then L2 normalisation of each row (l2norm_forward, torch's
// F.normalize). Forward only: embeddings are inference, nothing trains through them.
//   mean_pool_forward  one invocation per (b, channel), walking t = 0, 1, … in order
//   l2norm_forward     one workgroup per row, Σ x² by a fixed tree in workgroup memory
// Both sum in a fixed order, so the same inputs give the same bits every run. The
// launchers split B into chunks when x is larger than one binding; `b` in the params is
// the rows of this launch.
// Launchers: src/kernels/pool.rs. CPU references: src/reference/pool.rs.

// Mirrored by `MeanPoolParams` in src/kernels/pool.rs.
struct MeanPoolParams {
    b: u32,  // batch rows in this launch (a chunk of B)
    t: u32,  // positions T
    c: u32,  // channels C
}

// Mirrored by `L2normParams` in src/kernels/pool.rs.
struct L2normParams {
    b: u32,  // rows in this launch (a chunk of B)
    c: u32,  // channels C
}

// Invocations per workgroup of mean_pool_forward.
const POOL_WG: u32 = 256u;

// Invocations per row of l2norm_forward: a power of two, at most 256. The launcher picks
// the smallest power of two ≥ C in [32, 256]; each invocation takes channels
// li, li + WG, li + 2·WG, …
override WG: u32 = 256u;

// Denominator floors, as sentence-transformers (mask count) and F.normalize (norm).
const COUNT_MIN: f32 = 1e-9;
const NORM_MIN: f32 = 1e-12;

@group(0) @binding(0) var<storage, read_write> mp_out: array<f32>;  // (B, C)
@group(0) @binding(1) var<storage, read> mp_x: array<f32>;          // (B, T, C)
@group(0) @binding(2) var<storage, read> mp_mask: array<i32>;       // (B, T) 1 real, 0 pad
@group(0) @binding(3) var<uniform> mp_p: MeanPoolParams;

// out[b, c] = Σ_t mask[b,t]·x[b,t,c] / max(Σ_t mask[b,t], 1e-9). Positions with mask 0
// are skipped rather than multiplied by 0, so whatever padding holds (even inf or NaN)
// never reaches out; a row with no real token gets 0s.
@compute @workgroup_size(POOL_WG)
fn mean_pool_forward(@builtin(workgroup_id) wg: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * POOL_WG + li;
    let c = mp_p.c;
    let t = mp_p.t;
    if (i >= mp_p.b * c) {
        return;
    }
    let row = i / c;
    let ch = i % c;
    var sum = 0.0;
    var count = 0.0;
    for (var pos = 0u; pos < t; pos++) {
        let m = mp_mask[row * t + pos];
        if (m != 0) {
            let w = f32(m);
            sum += w * mp_x[(row * t + pos) * c + ch];
            count += w;
        }
    }
    mp_out[i] = sum / max(count, COUNT_MIN);
}

var<workgroup> l2_partial: array<f32, 256>;

@group(0) @binding(0) var<storage, read_write> l2_out: array<f32>;  // (B, C)
@group(0) @binding(1) var<storage, read> l2_x: array<f32>;          // (B, C)
@group(0) @binding(2) var<uniform> l2_p: L2normParams;

// out[b, :] = x[b, :] / max(‖x[b, :]‖₂, 1e-12). Σ x² is taken in f32 without rescaling,
// as torch does: rows with |x| beyond ~1e19 overflow, and all-tiny rows (|x| < ~1e-19)
// underflow to a norm of 0 and are divided by 1e-12.
@compute @workgroup_size(WG)
fn l2norm_forward(@builtin(workgroup_id) wg: vec3<u32>,
                  @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let row = linear_workgroup(wg, nwg);
    if (row >= l2_p.b) {
        return;  // the whole workgroup leaves: control flow stays uniform
    }
    let c = l2_p.c;
    let base = row * c;
    var s = 0.0;
    for (var i = li; i < c; i += WG) {
        let v = l2_x[base + i];
        s += v * v;
    }
    l2_partial[li] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k >> 1u) {
        if (li < k) {
            l2_partial[li] += l2_partial[li + k];
        }
        workgroupBarrier();
    }
    let denom = max(sqrt(l2_partial[0]), NORM_MIN);
    for (var i = li; i < c; i += WG) {
        l2_out[base + i] = l2_x[base + i] / denom;
    }
}
