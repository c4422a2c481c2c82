//! Launcher for shaders/peak.wgsl: a pure-FMA kernel whose throughput is the adapter's
//! compute ceiling, so every benchmark figure can be read as a fraction of it.

use bytemuck::{Pod, Zeroable};

use super::shaders::PEAK;
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Tensor};

/// Mirrors `PeakParams` in shaders/peak.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PeakParams {
    iters: u32,
    seed: f32,
}

pub const FMA_PEAK: KernelDesc = KernelDesc {
    shader: &PEAK,
    entry: "fma_peak",
    bindings: &[Binding::ReadWrite, Binding::Uniform],
};

/// Lanes per FMA chain (vec4 in the shader).
const LANES_PER_CHAIN: u64 = 4;

/// Record `out.numel()` invocations of `iters` iterations of `chains` (8 or 16) vec4
/// FMA chains, `unroll` iterations to a trip of the loop (UNROLL; `iters` a multiple of
/// it); returns the FLOPs recorded.
pub fn fma_peak(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    iters: u32,
    chains: u32,
    unroll: u32,
) -> Result<u64> {
    let n = out.numel();
    assert!(
        n.is_multiple_of(256),
        "fma_peak: {} invocations, not a multiple of 256",
        n
    );
    assert!(
        chains == 8 || chains == 16,
        "fma_peak: {chains} chains, expected 8 or 16"
    );
    assert!(
        unroll > 0 && iters.is_multiple_of(unroll),
        "fma_peak: {iters} iterations, not a multiple of the unroll {unroll}"
    );
    let p = PeakParams { iters, seed: 0.5 };
    s.dispatch(
        ctx,
        &FMA_PEAK,
        &[
            ("UNROLL", unroll as f64),
            ("WIDE", (chains == 16) as u8 as f64),
        ],
        "fma_peak",
        &[out.into()],
        Some(&p),
        [(n / 256) as u32, 1, 1],
    )?;
    Ok(n as u64 * iters as u64 * chains as u64 * LANES_PER_CHAIN * 2)
}
