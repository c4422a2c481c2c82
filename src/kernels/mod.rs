//! Kernel launchers: one module per shader file, one function per WGSL entry point,
//! with the entry point's name and the CPU reference's argument order (outputs, inputs,
//! dimensions). A launcher validates shapes, then records the launch into a
//! [`Schedule`](crate::gpu::Schedule); it never submits. To run one op alone, record it
//! into a fresh schedule and `run` that.

pub mod elementwise;
pub mod matmul;

use crate::gpu::Shader;

/// Every shader file of the crate, embedded at compile time.
pub mod shaders {
    use super::Shader;

    pub static ELEMENTWISE: Shader = Shader {
        name: "elementwise",
        source: include_str!("../../shaders/elementwise.wgsl"),
    };
    pub static MATMUL: Shader = Shader {
        name: "matmul",
        source: include_str!("../../shaders/matmul.wgsl"),
    };

    /// All shaders, for `wgformer selfcheck` and the compile-everything test.
    pub fn all() -> [&'static Shader; 2] {
        [&ELEMENTWISE, &MATMUL]
    }
}

/// Workgroups for `n` elements at `per_group` elements per workgroup, as a 1-D launch
/// (the scheduler folds it into 2-D when it is too wide).
pub(crate) fn groups_1d(n: usize, per_group: usize) -> [u32; 3] {
    [n.div_ceil(per_group).max(1) as u32, 1, 1]
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
