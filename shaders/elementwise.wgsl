// elementwise.wgsl: one pass over memory per op, one element per invocation.
// fill (out = value), copy (out = inp), add (out = a + b).
// Launchers: src/kernels/elementwise.rs. CPU references: src/reference/elementwise.rs.

struct ElementwiseParams {
    n: u32,      // elements
    value: f32,  // fill value; unused by copy and add
}

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> fill_out: array<f32>;  // (n)
@group(0) @binding(1) var<uniform> fill_p: ElementwiseParams;

@compute @workgroup_size(WG)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < fill_p.n) {
        fill_out[i] = fill_p.value;
    }
}

@group(0) @binding(0) var<storage, read_write> copy_out: array<f32>;  // (n)
@group(0) @binding(1) var<storage, read> copy_inp: array<f32>;        // (n)
@group(0) @binding(2) var<uniform> copy_p: ElementwiseParams;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < copy_p.n) {
        copy_out[i] = copy_inp[i];
    }
}

@group(0) @binding(0) var<storage, read_write> add_out: array<f32>;  // (n)
@group(0) @binding(1) var<storage, read> add_a: array<f32>;          // (n)
@group(0) @binding(2) var<storage, read> add_b: array<f32>;          // (n)
@group(0) @binding(3) var<uniform> add_p: ElementwiseParams;

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i < add_p.n) {
        add_out[i] = add_a[i] + add_b[i];
    }
}
