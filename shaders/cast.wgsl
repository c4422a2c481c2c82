// cast.wgsl: element type conversions. `enable f16;` comes in front of this file (the
// `CAST` shader's prelude, src/kernels/mod.rs), so it compiles only on devices with
// `shader-f16`.
//   cast_f32_to_f16   out (N) = f16(inp (N)), round to nearest: the f16 copies of the
//                     master weights that f16 matmuls read (src/kernels/cast.rs).
// CPU reference: src/reference/cast.rs.

// Mirrored by `CastParams` in src/kernels/cast.rs.
struct CastParams {
    n: u32,  // elements of inp
}

@group(0) @binding(0) var<storage, read_write> out: array<vec2<f16>>;  // (⌈N/2⌉): elements 2i, 2i+1
@group(0) @binding(1) var<storage, read> inp: array<f32>;              // (N)
@group(0) @binding(2) var<uniform> p: CastParams;

// One invocation writes one 4-byte word (two f16), so no two invocations share a word;
// the odd element past N is written 0 (the word of padding every f16 buffer has).
@compute @workgroup_size(256)
fn cast_f32_to_f16(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = linear_workgroup(wg, nwg) * 256u + li;
    let e = 2u * i;
    if (e >= p.n) { return; }
    var hi = 0.0;
    if (e + 1u < p.n) { hi = inp[e + 1u]; }
    out[i] = vec2<f16>(f16(inp[e]), f16(hi));
}
