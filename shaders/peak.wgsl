// peak.wgsl: the adapter's compute ceiling. Each invocation runs 8 independent vec4 FMA
// chains, or 16 with WIDE, for `iters` iterations (no memory traffic in the loop), then
// writes one value so the work cannot be optimised away. FLOPs = invocations · iters ·
// chains · 4 · 2. The launcher times both widths and keeps the faster: a CPU adapter
// holds a vec4 of 8 invocations in 4 SIMD registers, so 8 chains are 32 registers whose
// loop overhead and spills leave its FMA units idle part of the time (lavapipe: 42
// GFLOP/s with 8 chains, 49 with 16).
// Launcher: src/kernels/peak.rs. No CPU reference: the output is a checksum only.

struct PeakParams {
    iters: u32,  // loop trip count
    seed: f32,   // keeps the compiler from folding the chains
}

@group(0) @binding(0) var<storage, read_write> peak_out: array<f32>;  // (invocations)
@group(0) @binding(1) var<uniform> peak_p: PeakParams;

override WIDE: bool = false;  // 16 chains instead of 8
// Iterations per trip of the loop: a trip's compare and branch cost a GPU what a few
// FMAs do, so the launcher also times the body repeated UNROLL times and keeps the
// faster (iters must be a multiple of UNROLL).
override UNROLL: u32 = 1u;

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let s = peak_p.seed + f32(i) * 1e-7;
    var a0 = vec4<f32>(s, s + 1.0, s + 2.0, s + 3.0);
    var a1 = a0 + 0.1; var a2 = a0 + 0.2; var a3 = a0 + 0.3;
    var a4 = a0 + 0.4; var a5 = a0 + 0.5; var a6 = a0 + 0.6; var a7 = a0 + 0.7;
    var a8 = a0 + 0.8; var a9 = a0 + 0.9; var a10 = a0 + 1.0; var a11 = a0 + 1.1;
    var a12 = a0 + 1.2; var a13 = a0 + 1.3; var a14 = a0 + 1.4; var a15 = a0 + 1.5;
    let m = vec4<f32>(0.999999);
    let c = vec4<f32>(1e-6);
    for (var k = 0u; k < peak_p.iters; k += UNROLL) {
        for (var u = 0u; u < UNROLL; u++) {
            a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
            a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
            if (WIDE) {
                a8 = fma(a8, m, c); a9 = fma(a9, m, c); a10 = fma(a10, m, c); a11 = fma(a11, m, c);
                a12 = fma(a12, m, c); a13 = fma(a13, m, c); a14 = fma(a14, m, c); a15 = fma(a15, m, c);
            }
        }
    }
    var r = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    if (WIDE) { r += a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15; }
    peak_out[i] = r.x + r.y + r.z + r.w;
}
