//! Launcher for shaders/matmul.wgsl. `matmul_forward` is the layer's forward,
//! out (M, N) = inp (M, K) · weight (K, N) + bias (N), with weights in Hugging Face
//! Conv1D layout (C, OC). [`Gemm`] exposes the kernel's other forms (transposed
//! operands, accumulation) for the tied classifier and the backward pass.
//! CPU reference: `crate::reference::matmul`.

use bytemuck::{Pod, Zeroable};

use super::{expect_numel, shaders::MATMUL};
use crate::error::Result;
use crate::gpu::{Binding, GpuContext, KernelDesc, Schedule, Slot, Tensor};

/// Mirrors `MatmulParams` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32, // rows of out
    n: u32, // columns of out
    k: u32, // reduction length
}

pub const MATMUL_FORWARD: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward",
    bindings: &[
        Binding::ReadWrite,
        Binding::Read,
        Binding::Read,
        Binding::Read,
        Binding::Uniform,
    ],
};

/// Output tile of one workgroup, in rows and columns (TM, TN in the shader).
const TILE: usize = 64;

/// The form of one matmul: which operands are stored transposed, and whether the
/// result is added into `out` (as gradients are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gemm {
    /// `a` is stored (K, M) instead of (M, K).
    pub trans_a: bool,
    /// `w` is stored (N, K) instead of (K, N).
    pub trans_b: bool,
    /// out += result instead of out = result.
    pub accumulate: bool,
}

impl Gemm {
    /// Record out (M, N) (+)= op(a) · op(w) (+ bias). Checks every operand's size.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        self,
        s: &mut Schedule,
        ctx: &GpuContext,
        out: &Tensor,
        a: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        expect_numel(out, m * n)?;
        expect_numel(a, m * k)?;
        expect_numel(w, k * n)?;
        if let Some(b) = bias {
            expect_numel(b, n)?;
        }
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let constants = [
            ("TRANS_A", flag(self.trans_a)),
            ("TRANS_B", flag(self.trans_b)),
            ("HAS_BIAS", flag(bias.is_some())),
            ("ACCUMULATE", flag(self.accumulate)),
        ];
        let p = MatmulParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
        };
        // Without a bias the binding still needs a buffer; `a` stands in, unread.
        let bias_slot: Slot = bias.unwrap_or(a).into();
        let slots = [out.into(), a.into(), w.into(), bias_slot];
        let label = format!("matmul {} <- {} · {}", out.label, a.label, w.label);
        let groups = [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, 1];
        s.dispatch(
            ctx,
            &MATMUL_FORWARD,
            &constants,
            &label,
            &slots,
            Some(&p),
            groups,
        )
    }
}

/// out (M, N) = inp (M, K) · weight (K, N) + bias (N)
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    out: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    Gemm::default().record(s, ctx, out, inp, weight, bias, m, k, n)
}
