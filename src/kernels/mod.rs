//! Kernel launchers: one module per shader file, one function per WGSL entry point,
//! with the entry point's name and the CPU reference's argument order (outputs, inputs,
//! dimensions). A launcher validates shapes, then records the launch into a
//! [`Schedule`](crate::gpu::Schedule); it never submits. To run one op alone, record it
//! into a fresh schedule and `run` that.

pub mod adamw;
pub mod attention;
pub mod cast;
pub mod classifier;
pub mod crossentropy;
pub mod decode;
pub mod dropout;
pub mod elementwise;
pub mod encoder;
pub mod gelu;
pub mod gradnorm;
pub mod layernorm;
pub mod lossscale;
pub mod matmul;
pub mod mha;
pub mod peak;
pub mod pool;
pub mod relu;
pub mod residual;
pub mod sampling;
pub mod tanh;
#[cfg(not(target_arch = "wasm32"))]
pub mod tune;

use std::ops::Range;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Shader, Tensor};

/// Every shader file of the crate, embedded at compile time.
pub mod shaders {
    use super::Shader;

    pub static ELEMENTWISE: Shader = Shader {
        name: "elementwise",
        prelude: "",
        source: include_str!("../../shaders/elementwise.wgsl"),
    };
    /// The matmul shaders are written over `A_T` and `W_T`, the element types `a` and `w`
    /// are stored in: both f32; `w` f16 in the `_F16` variants (the f16 path's weight
    /// copies); both f16 in the `_F16_F16` variants (the mixed path). Same source; the
    /// f16 ones need `shader-f16`.
    const AW_F32: &str = "alias A_T = f32;\nalias W_T = f32;";
    const W_F16_ONLY: &str = "enable f16;\nalias A_T = f32;\nalias W_T = f16;";
    const AW_F16: &str = "enable f16;\nalias A_T = f16;\nalias W_T = f16;";
    /// `decode_logits` reads wte as `W_T` (it has no `a`).
    const W_F32: &str = "alias W_T = f32;";
    const W_F16: &str = "enable f16;\nalias W_T = f16;";
    pub static MATMUL: Shader = Shader {
        name: "matmul",
        prelude: AW_F32,
        source: include_str!("../../shaders/matmul.wgsl"),
    };
    pub static MATMUL_F16: Shader = Shader {
        name: "matmul[w f16]",
        prelude: W_F16_ONLY,
        source: MATMUL.source,
    };
    pub static MATMUL_F16_F16: Shader = Shader {
        name: "matmul[a f16, w f16]",
        prelude: AW_F16,
        source: MATMUL.source,
    };
    /// Only compiled on devices with fixed-size subgroups.
    pub static MATMUL_SUBGROUP: Shader = Shader {
        name: "matmul_subgroup",
        prelude: AW_F32,
        source: include_str!("../../shaders/matmul_subgroup.wgsl"),
    };
    pub static MATMUL_SUBGROUP_F16: Shader = Shader {
        name: "matmul_subgroup[w f16]",
        prelude: W_F16_ONLY,
        source: MATMUL_SUBGROUP.source,
    };
    pub static MATMUL_SUBGROUP_F16_F16: Shader = Shader {
        name: "matmul_subgroup[a f16, w f16]",
        prelude: AW_F16,
        source: MATMUL_SUBGROUP.source,
    };
    /// Needs `shader-f16`.
    pub static CAST: Shader = Shader {
        name: "cast",
        prelude: "enable f16;",
        source: include_str!("../../shaders/cast.wgsl"),
    };
    pub static ENCODER: Shader = Shader {
        name: "encoder",
        prelude: "",
        source: include_str!("../../shaders/encoder.wgsl"),
    };
    pub static LAYERNORM: Shader = Shader {
        name: "layernorm",
        prelude: "",
        source: include_str!("../../shaders/layernorm.wgsl"),
    };
    pub static ATTENTION: Shader = Shader {
        name: "attention",
        prelude: "",
        source: include_str!("../../shaders/attention.wgsl"),
    };
    pub static MHA: Shader = Shader {
        name: "mha",
        prelude: "",
        source: include_str!("../../shaders/mha.wgsl"),
    };
    pub static GELU: Shader = Shader {
        name: "gelu",
        prelude: "",
        source: include_str!("../../shaders/gelu.wgsl"),
    };
    pub static RELU: Shader = Shader {
        name: "relu",
        prelude: "",
        source: include_str!("../../shaders/relu.wgsl"),
    };
    pub static RESIDUAL: Shader = Shader {
        name: "residual",
        prelude: "",
        source: include_str!("../../shaders/residual.wgsl"),
    };
    pub static CROSSENTROPY: Shader = Shader {
        name: "crossentropy",
        prelude: "",
        source: include_str!("../../shaders/crossentropy.wgsl"),
    };
    pub static SAMPLING: Shader = Shader {
        name: "sampling",
        prelude: "",
        source: include_str!("../../shaders/sampling.wgsl"),
    };
    pub static ADAMW: Shader = Shader {
        name: "adamw",
        prelude: "",
        source: include_str!("../../shaders/adamw.wgsl"),
    };
    pub static GRADNORM: Shader = Shader {
        name: "gradnorm",
        prelude: "",
        source: include_str!("../../shaders/gradnorm.wgsl"),
    };
    /// The mixed path's dynamic loss scaling (f32 arithmetic: compiles everywhere).
    pub static LOSS_SCALE: Shader = Shader {
        name: "lossscale",
        prelude: "",
        source: include_str!("../../shaders/lossscale.wgsl"),
    };

    pub static DROPOUT: Shader = Shader {
        name: "dropout",
        prelude: "",
        source: include_str!("../../shaders/dropout.wgsl"),
    };
    /// `decode_logits` reads wte as `W_T`: f32, or f16 in `DECODE_F16` (the f16 path).
    pub static DECODE: Shader = Shader {
        name: "decode",
        prelude: W_F32,
        source: include_str!("../../shaders/decode.wgsl"),
    };
    pub static DECODE_F16: Shader = Shader {
        name: "decode[w f16]",
        prelude: W_F16,
        source: DECODE.source,
    };
    pub static PEAK: Shader = Shader {
        name: "peak",
        prelude: "",
        source: include_str!("../../shaders/peak.wgsl"),
    };
    pub static TANH: Shader = Shader {
        name: "tanh",
        prelude: "",
        source: include_str!("../../shaders/tanh.wgsl"),
    };
    pub static POOL: Shader = Shader {
        name: "pool",
        prelude: "",
        source: include_str!("../../shaders/pool.wgsl"),
    };

    /// The shaders that need `shader-f16` (not the `MATMUL_SUBGROUP_F16` variants, which
    /// also need subgroups).
    pub fn f16() -> [&'static Shader; 4] {
        [&MATMUL_F16, &MATMUL_F16_F16, &DECODE_F16, &CAST]
    }

    /// Every shader any device compiles (not `MATMUL_SUBGROUP`, which needs subgroups,
    /// nor those of [`f16`]).
    pub fn all() -> [&'static Shader; 19] {
        [
            &ELEMENTWISE,
            &MATMUL,
            &ENCODER,
            &LAYERNORM,
            &ATTENTION,
            &GELU,
            &RESIDUAL,
            &CROSSENTROPY,
            &SAMPLING,
            &ADAMW,
            &GRADNORM,
            &LOSS_SCALE,
            &DROPOUT,
            &DECODE,
            &PEAK,
            &MHA,
            &RELU,
            &TANH,
            &POOL,
        ]
    }
}

/// The params of every one-pass pointwise kernel (gelu, relu, tanh families): mirrors
/// `GeluParams`, `ReluParams` and `TanhParams` in their shaders.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PointwiseParams {
    n: u32, // elements
}

/// Record a pointwise kernel over N elements: `tensors` (the output first, then the
/// inputs) each hold N, one 1-D launch of `POINTWISE_WG`-invocation workgroups.
pub(crate) fn pointwise(
    s: &mut crate::gpu::Schedule,
    ctx: &GpuContext,
    desc: &crate::gpu::KernelDesc,
    tensors: &[&Tensor],
    n: usize,
) -> Result<()> {
    for t in tensors {
        expect_numel(t, n)?;
    }
    let names: Vec<&str> = tensors[1..].iter().map(|t| t.label.as_str()).collect();
    let label = format!(
        "{} {} <- {}",
        desc.entry,
        tensors[0].label,
        names.join(", ")
    );
    let slots: Vec<crate::gpu::Slot> = tensors.iter().map(|&t| t.into()).collect();
    let p = PointwiseParams { n: n as u32 };
    s.dispatch(
        ctx,
        desc,
        &[],
        &label,
        &slots,
        Some(&p),
        groups_1d(n, POINTWISE_WG),
    )
}

/// Invocations per workgroup of the pointwise kernels (`WG` in their shaders).
pub(crate) const POINTWISE_WG: usize = 256;

/// Split the batch into ranges such that every tensor, bound as `(B, elems)` with
/// `elems` from `per_batch` (tensor, elements per batch row), fits the context's binding
/// limit and starts at an aligned offset. Usually one range holding the whole batch.
/// `op` names the launcher in errors.
pub(crate) fn batch_chunks(
    ctx: &GpuContext,
    op: &str,
    b: usize,
    per_batch: &[(&Tensor, usize)],
) -> Result<Vec<Range<usize>>> {
    let align = ctx.limits().min_storage_buffer_offset_alignment as u64;
    let limit = ctx.binding_limit();
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // Smallest batch count whose byte size is a multiple of `align` for every tensor.
    let mut quantum = 1u64;
    let mut fit = u64::MAX;
    for &(tensor, elems) in per_batch {
        let bytes = (elems * tensor.dtype.size()) as u64;
        if bytes > limit {
            return Err(Error::TooLarge {
                tensor: format!("{} (one batch row of it)", tensor.label),
                bytes,
                limit,
                what: "max_storage_buffer_binding_size",
            });
        }
        let q = align / gcd(align, bytes.max(1));
        quantum = quantum / gcd(quantum, q) * q;
        fit = fit.min(limit / bytes.max(1));
    }
    // The first chunk starts at offset 0, so a batch that fits whole needs no alignment.
    if b as u64 <= fit {
        return Ok(std::iter::once(0..b).collect());
    }
    // Otherwise whole quanta per chunk; if not even one fits, one batch row per chunk
    // would, but at misaligned offsets: refuse rather than bind them.
    let per_chunk = (fit / quantum) * quantum;
    if per_chunk == 0 {
        return Err(Error::Invalid(format!(
            "{op}: no batch chunk fits the {limit}-byte binding limit at the device's \
             {align}-byte offset alignment ({quantum} batch rows needed per chunk)"
        )));
    }
    let per_chunk = per_chunk as usize;
    Ok((0..b)
        .step_by(per_chunk)
        .map(|r| r..(r + per_chunk).min(b))
        .collect())
}

/// Invocations per workgroup of a kernel that reduces each row inside one workgroup by a
/// barrier tree (layernorm, crossentropy): `gpu` on a GPU; on a CPU adapter 8, one SIMD
/// register of lanes, since there every level of the tree is a barrier that switches
/// between the workgroup's invocations (BENCHMARKS.md: 4–70x faster rows on lavapipe).
pub(crate) fn row_reduction_lanes(ctx: &crate::gpu::GpuContext, gpu: usize) -> f64 {
    if ctx.is_cpu() {
        8.0
    } else {
        gpu as f64
    }
}

/// Workgroups for `n` elements at `per_group` elements per workgroup, as a 1-D launch
/// (the scheduler folds it into 2-D when it is too wide).
pub(crate) fn groups_1d(n: usize, per_group: usize) -> [u32; 3] {
    [n.div_ceil(per_group).max(1) as u32, 1, 1]
}

/// Error unless `t` holds elements of `dtype`; names the tensor.
pub(crate) fn expect_dtype(
    t: &crate::gpu::Tensor,
    dtype: crate::gpu::DType,
) -> crate::error::Result<()> {
    if t.dtype != dtype {
        return Err(crate::error::Error::DType {
            tensor: t.label.clone(),
            expected: dtype.to_string(),
            found: t.dtype.to_string(),
        });
    }
    Ok(())
}

/// Error unless `t` holds exactly `numel` elements; names the tensor.
pub(crate) fn expect_numel(t: &crate::gpu::Tensor, numel: usize) -> crate::error::Result<()> {
    if t.numel() != numel {
        return Err(crate::error::Error::Shape {
            tensor: t.label.clone(),
            expected: vec![numel],
            found: t.shape.clone(),
        });
    }
    Ok(())
}
