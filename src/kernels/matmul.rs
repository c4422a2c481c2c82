//! Launchers for shaders/matmul.wgsl. `matmul_forward` is the layer's forward,
//! out (M, N) = inp (M, K) · weight (K, N) + bias (N), with weights in Hugging Face
//! Conv1D layout (C, OC); `matmul_backward` adds its three gradients. The tied
//! classifier (`classifier_forward`, `classifier_backward`) multiplies by wte (V, C)
//! itself, transposed or not. `matmul_forward_gelu_in` and `matmul_backward_gelu_in` are
//! GPT-2's MLP projection fed its input before the GELU, out = gelu(inp) · weight + bias:
//! the kernels apply the GELU to `a` as they load it ([`Gemm::a_gelu`]), so gelu(inp) is
//! never stored. All of them are forms of [`Gemm`], which picks the tiled kernel or, for
//! at most [`GEMV_MAX_M`] rows, `matmul_forward_gemv`, and splits every operand bigger
//! than one binding into row chunks, one launch per block. The tiled kernel's tile shape
//! comes from the context ([`TileConfig`], tuned per adapter by `kernels::tune`). CPU
//! reference: `crate::reference::matmul` (for the GELU forms,
//! `crate::reference::gelu::gelu_forward` of inp, then the plain product).

use std::ops::Range;

use bytemuck::{Pod, Zeroable};

use super::cast::expect_f16;
use super::{
    expect_dtype, expect_numel, groups_1d,
    shaders::{
        MATMUL, MATMUL_F16, MATMUL_F16_F16, MATMUL_SUBGROUP, MATMUL_SUBGROUP_F16,
        MATMUL_SUBGROUP_F16_F16,
    },
};
use crate::error::{Error, Result};
use crate::gpu::{Binding, DType, GpuContext, KernelDesc, MatmulKernel, Schedule, Slot, Tensor};

/// Mirrors `MatmulParams` in shaders/matmul.wgsl: the block of the product one launch
/// computes and where it lies inside each bound chunk.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,     // rows of this launch's block of out
    n: u32,     // columns of this launch's block of out
    k: u32,     // reduction length of this launch
    ldo: u32,   // row stride of out as stored
    lda: u32,   // row stride of a as stored
    ldw: u32,   // row stride of w as stored
    off_o: u32, // element of the out binding holding the block's (0, 0)
    off_a: u32, // element of the a binding holding op(a)'s (0, 0) of the block
    off_w: u32, // element of the w binding holding op(w)'s (0, 0) of the block
    off_b: u32, // element of the bias binding for the block's column 0
}

/// Mirrors `SubgroupParams` in shaders/matmul_subgroup.wgsl and `MatmulParams` in
/// shaders/matmul.wgsl: [`MatmulParams`] and the strides of a batch of products over the
/// grid's z (see [`matmul_batched`]). Every matmul launch but the bias's takes these.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BatchParams {
    base: MatmulParams,
    zh: u32,  // products per outer batch index (1 when not batched)
    so1: u32, // out: stride per outer batch index
    so2: u32, // out: stride per inner batch index
    sa1: u32, // a: stride per outer batch index
    sa2: u32, // a: stride per inner batch index
    sw1: u32, // w: stride per outer batch index
    sw2: u32, // w: stride per inner batch index
    /// HAS_BIAS (bit 0) and ACCUMULATE (bit 1) ([`store_flags`]): override constants of
    /// every kernel but the wide subgroup one, which reads these flags instead.
    flags: u32,
}

impl BatchParams {
    fn single(base: MatmulParams, flags: u32) -> Self {
        BatchParams {
            base,
            zh: 1,
            flags,
            ..Zeroable::zeroed()
        }
    }
}

/// `BatchParams::flags` for a launch that adds the bias and/or into out.
fn store_flags(has_bias: bool, accumulate: bool) -> u32 {
    u32::from(has_bias) | (u32::from(accumulate) << 1)
}

/// The override constants of a form for the kernel that runs it: the wide subgroup kernel
/// takes bias and accumulation as `BatchParams::flags` instead (each of its forms costs
/// lavapipe 8–11 s to compile, and those two only change the epilogue; the narrow one keeps
/// the constants: it compiles in a second or two, and its short products are where an
/// epilogue weighs most; see sg_store4).
fn form_constants(
    flags_in_params: bool,
    trans_a: bool,
    trans_b: bool,
    has_bias: bool,
    accumulate: bool,
) -> Vec<(&'static str, f64)> {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let mut c = vec![("TRANS_A", flag(trans_a)), ("TRANS_B", flag(trans_b))];
    if !flags_in_params {
        c.push(("HAS_BIAS", flag(has_bias)));
        c.push(("ACCUMULATE", flag(accumulate)));
    }
    c
}

/// Mirrors `BiasParams` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct BiasParams {
    m: u32,      // rows of dout in this launch
    n: u32,      // columns
    slab: u32,   // rows per slab
    s0: u32,     // row of partials this launch's first slab writes
    direct: u32, // 1: add into dbias (one slab); 0: write rows of partials
}

const GEMM_BINDINGS: &[Binding] = &[
    Binding::ReadWrite,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Uniform,
];

pub const MATMUL_FORWARD: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward",
    bindings: GEMM_BINDINGS,
};

/// The tiled kernel staging its slices with vec4 loads (both operands' strides, offsets
/// and extents along their contiguous dimension multiples of 4).
pub const MATMUL_FORWARD_VEC4: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward_vec4",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_GEMV: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward_gemv",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_GEMV_COLS: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward_gemv_cols",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_GEMV_COLS_VEC4: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward_gemv_cols_vec4",
    bindings: GEMM_BINDINGS,
};

/// Lanes per `matmul_forward_gemv_cols` workgroup (GEMV_LANES in the shader): one SIMD
/// register on a CPU adapter; each lane owns 4 columns.
const GEMV_CPU_LANES: usize = 8;

/// Column quads per lane of `matmul_forward_gemv_cols_vec4` (GEMV_QUADS in the shader).
const GEMV_CPU_QUADS: usize = 4;

pub const MATMUL_FORWARD_ROWS: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_forward_rows",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_SUBGROUP: KernelDesc = KernelDesc {
    shader: &MATMUL_SUBGROUP,
    entry: "matmul_forward_subgroup",
    bindings: GEMM_BINDINGS,
};

/// Rows of out per `matmul_forward_subgroup` workgroup (SR in shaders/matmul_subgroup.wgsl);
/// each of its subgroup's lanes owns 4 columns.
const SUBGROUP_ROWS: usize = 16;

pub const MATMUL_FORWARD_SUBGROUP_WIDE: KernelDesc = KernelDesc {
    shader: &MATMUL_SUBGROUP,
    entry: "matmul_forward_subgroup_wide",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_SUBGROUP_WIDE_VEC4: KernelDesc = KernelDesc {
    shader: &MATMUL_SUBGROUP,
    entry: "matmul_forward_subgroup_wide_vec4",
    bindings: GEMM_BINDINGS,
};

pub const MATMUL_FORWARD_SUBGROUP_WIDE_VEC4_TA: KernelDesc = KernelDesc {
    shader: &MATMUL_SUBGROUP,
    entry: "matmul_forward_subgroup_wide_vec4_ta",
    bindings: GEMM_BINDINGS,
};

/// Rows of out per `matmul_forward_subgroup_wide` workgroup (WR in the shader) and column
/// quads per lane (WQ): a workgroup owns 4·WQ·SG columns.
const SUBGROUP_WIDE_ROWS: usize = 64;
const SUBGROUP_WIDE_QUADS: usize = 4;

/// Whether a block of `m` × `n` of out runs on `matmul_forward_subgroup_wide` rather than
/// `matmul_forward_subgroup`: on CPU adapters (GPUs would spill its 1024 sums an
/// invocation), where more than a quarter of its 64 rows and half its 128 columns hold
/// results (attention's per-head products at T = 64, 64 × 64, keep the narrow kernel).
/// Blocks of 17–32 rows (prefills of that many tokens) ran about 1.5x as fast on the wide
/// kernel as on the narrow one, even with most of its rows wasted (lavapipe, 2026-11-30,
/// BENCHMARKS.md).
fn subgroup_wide(ctx: &GpuContext, sg: u32, m: usize, n: usize) -> bool {
    ctx.is_cpu() && m > SUBGROUP_WIDE_ROWS / 4 && n > 2 * SUBGROUP_WIDE_QUADS * sg as usize
}

/// The wide subgroup kernel for a block whose w can (`vec_w`) or cannot be read as vec4,
/// and whose a, stored (K, M), can also be read as vec4 along M (`vec_a_ta`: TRANS_A, a's
/// stride, offsets and the block's M multiples of 4), its name in launch labels, and its
/// grid for a block of `m` × `n` (× `z` products).
fn subgroup_wide_launch(
    vec_w: bool,
    vec_a_ta: bool,
    sg: u32,
    m: usize,
    n: usize,
    z: u32,
) -> (&'static KernelDesc, &'static str, [u32; 3]) {
    let groups = [
        n.div_ceil(4 * SUBGROUP_WIDE_QUADS * sg as usize) as u32,
        m.div_ceil(SUBGROUP_WIDE_ROWS) as u32,
        z,
    ];
    let (desc, name) = match (vec_w, vec_a_ta) {
        (true, true) => (
            &MATMUL_FORWARD_SUBGROUP_WIDE_VEC4_TA,
            "matmul_subgroup_wide_vec4_ta",
        ),
        (true, false) => (
            &MATMUL_FORWARD_SUBGROUP_WIDE_VEC4,
            "matmul_subgroup_wide_vec4",
        ),
        (false, _) => (&MATMUL_FORWARD_SUBGROUP_WIDE, "matmul_subgroup_wide"),
    };
    (desc, name, groups)
}

/// Rows of out per `matmul_forward_rows` workgroup (RR in the shader) and lanes per
/// workgroup.
const ROWS_M: usize = 16;
const ROWS_LANES: usize = 64;

pub const MATMUL_BACKWARD_BIAS: KernelDesc = KernelDesc {
    shader: &MATMUL,
    entry: "matmul_backward_bias",
    bindings: &[Binding::ReadWrite, Binding::Read, Binding::Uniform],
};

/// The tile shape of the tiled `matmul_forward`: a workgroup of `wx`×`wy` invocations,
/// each owning an `rb`×`rb` register block (4 or 8), computes a (rb·wy)×(rb·wx) tile of
/// out, staging K slices of `tk` through workgroup memory ((rb·wy + rb·wx)·tk floats).
/// Chosen per adapter by `kernels::tune` among [`TileConfig::CANDIDATES`]; override
/// constants TWX, TWY, RB, TK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TileConfig {
    pub wx: u32,
    pub wy: u32,
    pub tk: u32,
    /// Rows and columns of out per invocation (tune caches written before blocks of 8
    /// existed hold 4).
    #[serde(default = "block_of_4")]
    pub rb: u32,
    /// Stage the slices element by element (`matmul_forward`) even where the operands
    /// could be staged as vec4 (`matmul_forward_vec4`): set only by `WGFORMER_TILE`'s
    /// fifth field, to time the two stagings against each other (the 128×128 tiles ran
    /// the plain form 5x slower than the transposed ones on an H200, cause unknown).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub element: bool,
}

fn block_of_4() -> u32 {
    4
}

impl TileConfig {
    /// 16×16 invocations with 4×4 blocks, 64×64 tiles, K slices of 16 (8 KiB of workgroup
    /// memory).
    pub const DEFAULT: TileConfig = TileConfig {
        wx: 16,
        wy: 16,
        tk: 16,
        rb: 4,
        element: false,
    };

    /// The shapes the tuner times. With 4×4 blocks: 64×64 tiles with K slices of 8, 16
    /// and 32, 32×64 and 64×32 tiles (128 invocations), and 32×32 tiles (64 invocations).
    /// With 8×8 blocks (64 accumulators an invocation, 4 vec4 reads of workgroup memory
    /// per 64 FMAs): 128×128 tiles with K slices of 8 and 16, and 64×64 tiles of 64
    /// invocations. Every one stays within WebGPU's 16 KiB of workgroup memory and 256
    /// invocations.
    pub const CANDIDATES: [TileConfig; 9] = [
        TileConfig::DEFAULT,
        TileConfig::new(16, 16, 8, 4),
        TileConfig::new(16, 16, 32, 4),
        TileConfig::new(16, 8, 16, 4),
        TileConfig::new(8, 16, 16, 4),
        TileConfig::new(8, 8, 16, 4),
        TileConfig::new(16, 16, 8, 8),
        TileConfig::new(16, 16, 16, 8),
        TileConfig::new(8, 8, 16, 8),
    ];

    pub const fn new(wx: u32, wy: u32, tk: u32, rb: u32) -> Self {
        TileConfig {
            wx,
            wy,
            tk,
            rb,
            element: false,
        }
    }

    /// Rows and columns of out per workgroup.
    pub fn tile(self) -> (usize, usize) {
        ((self.rb * self.wy) as usize, (self.rb * self.wx) as usize)
    }

    /// Packed into one word (for the context's atomic): a byte each for wx, wy and tk,
    /// rb in bits 24..30, `element` in bit 31.
    pub fn pack(self) -> u32 {
        self.wx | self.wy << 8 | self.tk << 16 | self.rb << 24 | (self.element as u32) << 31
    }

    pub fn unpack(v: u32) -> Self {
        TileConfig {
            wx: v & 0xff,
            wy: (v >> 8) & 0xff,
            tk: (v >> 16) & 0xff,
            rb: (v >> 24) & 0x7f,
            element: v >> 31 == 1,
        }
    }
}

impl std::str::FromStr for TileConfig {
    type Err = crate::Error;
    /// "wx,wy,tk,rb" (`WGFORMER_TILE`), e.g. "16,16,8,8" for 128×128 tiles of 8×8 blocks:
    /// a shape the kernel can run (rb 4 or 8, tk a multiple of 4, at most 256
    /// invocations and WebGPU's 16 KiB of workgroup memory); ",element" after it stages
    /// the slices element by element ([`TileConfig::element`]).
    fn from_str(s: &str) -> crate::Result<Self> {
        let bad = |why: &str| {
            crate::Error::Invalid(format!(
                "WGFORMER_TILE={s:?}: {why}; expected wx,wy,tk,rb such as 16,16,8,8 \
                 (optionally followed by ,element)"
            ))
        };
        let mut fields: Vec<&str> = s.split(',').map(str::trim).collect();
        let element = fields.last() == Some(&"element");
        if element {
            fields.pop();
        }
        let v: Vec<u32> = fields
            .iter()
            .map(|x| x.parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("not four whole numbers"))?;
        let [wx, wy, tk, rb] = v[..] else {
            return Err(bad("not four numbers"));
        };
        let t = TileConfig {
            element,
            ..TileConfig::new(wx, wy, tk, rb)
        };
        let (tm, tn) = t.tile();
        if !(rb == 4 || rb == 8) {
            return Err(bad("rb must be 4 or 8"));
        }
        if tk == 0 || tk % 4 != 0 || tk > 64 {
            return Err(bad("tk must be a multiple of 4 up to 64"));
        }
        if wx == 0 || wy == 0 || wx * wy > 256 {
            return Err(bad("wx·wy must be 1 to 256 invocations"));
        }
        if (tm + tn) * tk as usize * 4 > 16384 {
            return Err(bad("the tile needs more than 16 KiB of workgroup memory"));
        }
        Ok(t)
    }
}

impl std::fmt::Display for TileConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tm, tn) = self.tile();
        write!(
            f,
            "{tm}x{tn} tiles, {rb}x{rb} blocks, K slices of {}",
            self.tk,
            rb = self.rb
        )?;
        if self.element {
            f.write_str(", staged element by element")?;
        }
        Ok(())
    }
}

/// Products with at most this many rows of out go to `matmul_forward_gemv` (decoding at
/// T = 1 and small batches). Must equal GEMV_MAX_M in the shader.
pub const GEMV_MAX_M: usize = 4;

/// Columns of out per `matmul_forward_gemv` workgroup: GX for w (K, N); for w (N, K),
/// GEMV_ROUNDS rounds of GY columns.
const GEMV_COLS: usize = 64;
const GEMV_ROUNDS: usize = 8;
const GEMV_COLS_TRANS_B: usize = 4 * GEMV_ROUNDS;

/// Columns of dbias per `matmul_backward_bias` workgroup (GX in the shader).
const BIAS_COLS: usize = 64;

/// Rows of dout per `matmul_backward_bias` slab (one workgroup's rows) at the least; a
/// taller dout gets taller slabs, so that there are never more than this many slabs.
pub const BIAS_SLAB: usize = 256;

/// Up to this many rows, `matmul_backward_bias` (and layernorm's dweight, dbias) sum in
/// one slab: below five slabs the second launch costs more than the workgroups gain (the
/// baby GPT's step, B·T = 768, took 0.5 ms longer in slabs on an H200, 2026-11-30).
pub const BIAS_ONE_SLAB_ROWS: usize = 4 * BIAS_SLAB;

/// Rows per slab of a column sum over `m` rows (`matmul_backward_bias`, layernorm's
/// dweight and dbias): all of them up to [`BIAS_ONE_SLAB_ROWS`], else [`BIAS_SLAB`], or
/// more where that would make more than BIAS_SLAB slabs; a multiple of 4.
pub fn bias_slab_rows(m: usize) -> usize {
    if m <= BIAS_ONE_SLAB_ROWS {
        return m.max(1).next_multiple_of(4);
    }
    BIAS_SLAB.max(m.div_ceil(BIAS_SLAB)).next_multiple_of(4)
}

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
    /// op(a) is GPT-2's tanh GELU of what `a` holds, applied as it is loaded (A_GELU):
    /// the same function as `gelu_forward`, so the same bits as gelu_forward into a
    /// tensor, then this form without it.
    pub a_gelu: bool,
}

/// The three dimensions of a product, as indices into `[m, n, k]`.
const M: usize = 0;
const N: usize = 1;
const K: usize = 2;

/// One stored operand: its tensor, the product dimensions along its rows and its columns,
/// and the row chunks it is bound in.
struct Operand<'a> {
    t: &'a Tensor,
    rows: usize,
    cols: usize,
    ld: usize,
    chunks: Vec<Range<usize>>,
}

impl<'a> Operand<'a> {
    fn new(ctx: &GpuContext, t: &'a Tensor, rows: usize, cols: usize, dims: [usize; 3]) -> Self {
        let ld = dims[cols];
        Operand {
            t,
            rows,
            cols,
            ld,
            chunks: ctx.row_chunks_of(t.dtype, dims[rows], ld),
        }
    }

    /// The binding holding the block that starts at `pos` ([m, n, k]), and the element of
    /// that binding where the block's first element lies.
    fn bind(&self, pos: [usize; 3]) -> (Slot<'a>, u32) {
        if self.t.numel() == 0 {
            return (self.t.into(), 0);
        }
        let r = pos[self.rows];
        let c = self
            .chunks
            .iter()
            .find(|c| c.contains(&r) || c.start == r)
            .unwrap_or_else(|| panic!("matmul: no chunk of {} holds row {r}", self.t.label));
        let offset = (r - c.start) * self.ld + pos[self.cols];
        (self.t.rows_slot(c.clone(), self.ld), offset as u32)
    }
}

/// Split `0..len` at every chunk start of the operands whose rows run along `dim`: the
/// coarsest ranges of which each lies inside one chunk of every operand.
fn launch_ranges(len: usize, dim: usize, operands: &[&Operand]) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = operands
        .iter()
        .filter(|o| o.rows == dim)
        .flat_map(|o| o.chunks.iter().map(|c| c.start))
        .filter(|&s| s > 0 && s < len)
        .collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts.dedup();
    if len == 0 {
        return vec![Range { start: 0, end: 0 }];
    }
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

impl Gemm {
    /// Record out (M, N) (+)= op(a) · op(w) (+ bias). Checks every operand's size.
    ///
    /// Operands bigger than [`GpuContext::binding_limit`] are bound in row chunks
    /// ([`GpuContext::row_chunks`]); the product is computed in blocks, each inside one
    /// chunk of every operand, one launch per block. Blocks along K are added up launch
    /// after launch in order (the first one alone applies `accumulate` and the bias), so
    /// the result is deterministic. With M ≤ [`GEMV_MAX_M`] each block goes to
    /// `matmul_forward_gemv`, otherwise to the tiled `matmul_forward`.
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
            expect_dtype(b, DType::F32)?;
        }
        expect_dtype(out, DType::F32)?;
        // w may be f16 (the f16 path's weight copies), and then a too (the mixed path's
        // activations and gradients): the same kernels, compiled with the operands
        // stored as f16 and widened on load.
        let half = w.dtype == DType::F16;
        let half_a = a.dtype == DType::F16;
        if half {
            expect_f16("matmul", ctx)?;
        } else {
            expect_dtype(w, DType::F32)?;
        }
        if half_a && !half {
            return Err(Error::Invalid(format!(
                "matmul {} <- {} · {}: a is f16 but w is f32; f16 a needs f16 w",
                out.label, a.label, w.label
            )));
        }
        if !half_a {
            expect_dtype(a, DType::F32)?;
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let dims = [m, n, k];
        let (a_rows, a_cols) = if self.trans_a { (K, M) } else { (M, K) };
        let (w_rows, w_cols) = if self.trans_b { (N, K) } else { (K, N) };
        let o = Operand::new(ctx, out, M, N, dims);
        let oa = Operand::new(ctx, a, a_rows, a_cols, dims);
        let ow = Operand::new(ctx, w, w_rows, w_cols, dims);
        let all = [&o, &oa, &ow];
        let ranges = [
            launch_ranges(m, M, &all),
            launch_ranges(n, N, &all),
            launch_ranges(k, K, &all),
        ];
        let gemv = m <= GEMV_MAX_M;
        // On a CPU adapter with the CPU kernel families (rows, subgroup), w (K, N) products
        // at M ≤ 4 run on the barrier-free column kernel; everywhere else (GPUs, whichever
        // family won their tuning), on the gemv that splits K over a workgroup: the column
        // kernel walks all of K in one lane, which took 1.3 ms for GPT-2's fc at M = 1 on
        // an H200 (2026-11-30). Tests run every family, so both on a CPU adapter.
        let gemv_cols =
            gemv && !self.trans_b && ctx.is_cpu() && ctx.matmul_kernel() != MatmulKernel::Tiled;
        let gemv_rounds = [("GEMV_ROUNDS", GEMV_ROUNDS as f64)];
        let prefer_rows = !gemv && ctx.matmul_kernel() == MatmulKernel::Rows;
        let subgroup = match ctx.subgroup_size() {
            Some(sg) if !gemv && ctx.matmul_kernel() == MatmulKernel::Subgroup => Some(sg),
            _ => None,
        };
        let chunked = ranges.iter().any(|r| r.len() > 1);
        for mr in &ranges[M] {
            for nr in &ranges[N] {
                for (ki, kr) in ranges[K].iter().enumerate() {
                    // Later K blocks add into what the first one wrote.
                    let first = ki == 0;
                    let has_bias = bias.is_some() && first;
                    let accumulate = self.accumulate || !first;
                    let pos = [mr.start, nr.start, kr.start];
                    let (so, off_o) = o.bind(pos);
                    let (sa, off_a) = oa.bind(pos);
                    let (sw, off_w) = ow.bind(pos);
                    let (bm, bn, bk) = (mr.len(), nr.len(), kr.len());
                    // w read as vec4 along its contiguous dimension (the row kernel, and
                    // the vec4 entries of the wide subgroup and tiled kernels): its
                    // stride, offset and the block's extent along it multiples of 4.
                    let vec_w = ow.ld.is_multiple_of(4)
                        && off_w.is_multiple_of(4)
                        && if self.trans_b { bk } else { bn }.is_multiple_of(4);
                    // a read as vec4 along its contiguous dimension, likewise (the tiled
                    // kernel's vec4 entry; the wide subgroup kernel's for TRANS_A).
                    let vec_a = oa.ld.is_multiple_of(4)
                        && off_a.is_multiple_of(4)
                        && if self.trans_a { bm } else { bk }.is_multiple_of(4);
                    let wide = subgroup
                        .filter(|&sg| subgroup_wide(ctx, sg, bm, bn))
                        .map(|sg| {
                            subgroup_wide_launch(vec_w, self.trans_a && vec_a, sg, bm, bn, 1)
                        });
                    let mut constants = form_constants(
                        wide.is_some(),
                        self.trans_a,
                        self.trans_b,
                        has_bias,
                        accumulate,
                    );
                    // Named only when set, so the plain forms keep their pipeline keys.
                    if self.a_gelu {
                        constants.push(("A_GELU", 1.0));
                    }
                    // The row kernel reads w as vec4 along its rows: along N, or along K
                    // when w is stored (N, K).
                    let rows = prefer_rows && vec_w;
                    let (desc, name) = if gemv_cols {
                        constants.push(("GEMV_M", bm as f64));
                        constants.push(("GEMV_LANES", GEMV_CPU_LANES as f64));
                        if vec_w {
                            (
                                &MATMUL_FORWARD_GEMV_COLS_VEC4,
                                "matmul_forward_gemv_cols_vec4",
                            )
                        } else {
                            (&MATMUL_FORWARD_GEMV_COLS, "matmul_forward_gemv_cols")
                        }
                    } else if gemv {
                        constants.extend_from_slice(&gemv_rounds);
                        constants.push(("GEMV_M", bm as f64));
                        (&MATMUL_FORWARD_GEMV, "matmul_forward_gemv")
                    } else if let Some(sg) = subgroup {
                        constants.push(("SG", sg as f64));
                        if let Some((desc, name, _)) = wide {
                            (desc, name)
                        } else {
                            (&MATMUL_FORWARD_SUBGROUP, "matmul_forward_subgroup")
                        }
                    } else if rows {
                        (&MATMUL_FORWARD_ROWS, "matmul_forward_rows")
                    } else {
                        let t = ctx.tile_config();
                        constants.push(("TWX", t.wx as f64));
                        constants.push(("TWY", t.wy as f64));
                        constants.push(("TK", t.tk as f64));
                        constants.push(("RB", t.rb as f64));
                        // vec4 staging: both operands read as vec4.
                        if vec_a && vec_w && !t.element {
                            (&MATMUL_FORWARD_VEC4, "matmul_vec4")
                        } else {
                            (&MATMUL_FORWARD, "matmul")
                        }
                    };
                    let p = MatmulParams {
                        m: bm as u32,
                        n: bn as u32,
                        k: bk as u32,
                        ldo: o.ld as u32,
                        lda: oa.ld as u32,
                        ldw: ow.ld as u32,
                        off_o,
                        off_a,
                        off_w,
                        off_b: nr.start as u32,
                    };
                    // Without a bias the binding still needs a buffer; a's chunk stands in,
                    // unread. A bias (N) is small and is bound whole.
                    let sb = match bias {
                        Some(b) if has_bias => b.into(),
                        _ => sa,
                    };
                    let mut label = if self.a_gelu {
                        format!("{name} {} <- gelu({}) · {}", out.label, a.label, w.label)
                    } else {
                        format!("{name} {} <- {} · {}", out.label, a.label, w.label)
                    };
                    if chunked {
                        label += &format!(" [{mr:?}, {nr:?}, k {kr:?}]");
                    }
                    let groups = if let Some((_, _, groups)) = wide {
                        groups
                    } else if let Some(sg) = subgroup {
                        [
                            bn.div_ceil(4 * sg as usize) as u32,
                            bm.div_ceil(SUBGROUP_ROWS) as u32,
                            1,
                        ]
                    } else if rows {
                        [
                            bn.div_ceil(4 * ROWS_LANES) as u32,
                            bm.div_ceil(ROWS_M) as u32,
                            1,
                        ]
                    } else if gemv_cols && vec_w {
                        groups_1d(bn, 4 * GEMV_CPU_LANES * GEMV_CPU_QUADS)
                    } else if gemv_cols {
                        groups_1d(bn, 4 * GEMV_CPU_LANES)
                    } else if !gemv {
                        let (tm, tn) = ctx.tile_config().tile();
                        [bn.div_ceil(tn) as u32, bm.div_ceil(tm) as u32, 1]
                    } else if self.trans_b {
                        groups_1d(bn, GEMV_COLS_TRANS_B)
                    } else {
                        groups_1d(bn, GEMV_COLS)
                    };
                    let slots = [so, sa, sw, sb];
                    let half_desc;
                    let desc = if half {
                        half_desc = KernelDesc {
                            shader: match (subgroup.is_some(), half_a) {
                                (true, true) => &MATMUL_SUBGROUP_F16_F16,
                                (true, false) => &MATMUL_SUBGROUP_F16,
                                (false, true) => &MATMUL_F16_F16,
                                (false, false) => &MATMUL_F16,
                            },
                            ..*desc
                        };
                        &half_desc
                    } else {
                        desc
                    };
                    let p = BatchParams::single(p, store_flags(has_bias, accumulate));
                    s.dispatch(ctx, desc, &constants, &label, &slots, Some(&p), groups)?;
                }
            }
        }
        Ok(())
    }
}

/// out (M, N) = inp (M, K) · weight (K, N) + bias (N). At most [`GEMV_MAX_M`] rows go to
/// [`matmul_forward_gemv`]'s kernel.
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

/// out (M, N) = inp (M, K) · weight (K, N) + bias (N) for M ≤ [`GEMV_MAX_M`]: the kernel
/// [`matmul_forward`] picks by itself for so few rows; callable directly for tests.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gemv(
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
    if m > GEMV_MAX_M {
        return Err(Error::Invalid(format!(
            "matmul_forward_gemv {}: {m} rows, the kernel takes at most {GEMV_MAX_M}",
            out.label
        )));
    }
    matmul_forward(s, ctx, out, inp, weight, bias, m, k, n)
}

/// out (M, N) = gelu(inp (M, K)) · weight (K, N) + bias (N), gelu the tanh GELU of
/// `gelu_forward`, applied by the matmul as it loads inp: GPT-2's MLP projection reading
/// fch, so gelu(fch) (B·T·4C floats a layer) is never stored. The same bits as
/// `gelu_forward` into a tensor followed by [`matmul_forward`] of it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_gelu_in(
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
    let form = Gemm {
        a_gelu: true,
        ..Gemm::default()
    };
    form.record(s, ctx, out, inp, weight, bias, m, k, n)
}

/// Gradients of [`matmul_forward`], added into (`+=`) all of them:
/// dinp (M, K) += dout (M, N) · weightᵀ, dweight (K, N) += inpᵀ · dout,
/// dbias (N) += Σ_rows dout. The training step zeroes gradients once per step.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp: &Tensor,
    dweight: &Tensor,
    dbias: Option<&Tensor>,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    backward(
        s,
        ctx,
        dinp,
        dweight,
        dbias,
        dout,
        inp,
        weight,
        (m, k, n),
        false,
    )
}

/// Gradients of [`matmul_forward_gelu_in`], added into (`+=`) all of them, with inp the
/// tensor before the GELU: dgelu (M, K) += dout (M, N) · weightᵀ, the gradient of
/// gelu(inp), which `gelu_backward` then takes through the GELU;
/// dweight (K, N) += gelu(inp)ᵀ · dout, the GELU applied as inp is loaded (the same bits
/// as from a stored gelu(inp)); dbias (N) += Σ_rows dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_gelu_in(
    s: &mut Schedule,
    ctx: &GpuContext,
    dgelu: &Tensor,
    dweight: &Tensor,
    dbias: Option<&Tensor>,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    backward(
        s,
        ctx,
        dgelu,
        dweight,
        dbias,
        dout,
        inp,
        weight,
        (m, k, n),
        true,
    )
}

/// [`matmul_backward`], or with `a_gelu` [`matmul_backward_gelu_in`].
#[allow(clippy::too_many_arguments)]
fn backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dinp: &Tensor,
    dweight: &Tensor,
    dbias: Option<&Tensor>,
    dout: &Tensor,
    inp: &Tensor,
    weight: &Tensor,
    (m, k, n): (usize, usize, usize),
    a_gelu: bool,
) -> Result<()> {
    expect_numel(dinp, m * k)?;
    expect_numel(dweight, k * n)?;
    expect_numel(dout, m * n)?;
    expect_numel(inp, m * k)?;
    expect_numel(weight, k * n)?;
    // dinp (M, K) += dout (M, N) · weight (K, N)ᵀ: weight is stored as op(w)ᵀ.
    let dinp_form = Gemm {
        trans_b: true,
        accumulate: true,
        ..Gemm::default()
    };
    dinp_form.record(s, ctx, dinp, dout, weight, None, m, n, k)?;
    // dweight (K, N) += op(inp) (M, K)ᵀ · dout (M, N): inp is stored as op(a)ᵀ, and
    // op(inp) is gelu(inp) with a_gelu.
    let dweight_form = Gemm {
        trans_a: true,
        accumulate: true,
        a_gelu,
        ..Gemm::default()
    };
    dweight_form.record(s, ctx, dweight, inp, dout, None, k, m, n)?;
    if let Some(db) = dbias {
        matmul_backward_bias(s, ctx, db, dout, m, n)?;
    }
    Ok(())
}

/// dbias (N) += Σ_m dout (M, N), rows added in a fixed order. dout is read in row chunks
/// that fit one binding, and summed in slabs of [`bias_slab_rows`] rows, one workgroup
/// per slab and 64 columns; with more than one slab, the slabs' sums go to a scratch
/// (S, N) that one more launch adds into dbias, slab by slab.
pub fn matmul_backward_bias(
    s: &mut Schedule,
    ctx: &GpuContext,
    dbias: &Tensor,
    dout: &Tensor,
    m: usize,
    n: usize,
) -> Result<()> {
    expect_numel(dbias, n)?;
    expect_numel(dout, m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let max_groups = ctx.device.limits().max_compute_workgroups_per_dimension as usize;
    if n.div_ceil(BIAS_COLS) > max_groups {
        return Err(Error::Invalid(format!(
            "matmul_backward_bias {}: {n} columns exceed the {} this device can launch",
            dbias.label,
            max_groups * BIAS_COLS
        )));
    }
    let chunks = ctx.row_chunks(m, n);
    let slab = bias_slab_rows(m);
    let slabs: Vec<usize> = chunks.iter().map(|r| r.len().div_ceil(slab)).collect();
    let total: usize = slabs.iter().sum();
    let label = format!("matmul_backward_bias {} <- {}", dbias.label, dout.label);
    if total == 1 {
        let p = BiasParams {
            m: m as u32,
            n: n as u32,
            slab: slab as u32,
            s0: 0,
            direct: 1,
        };
        return bias_launch(s, ctx, &label, dbias.into(), dout.into(), &p, 1);
    }
    let partials = ctx.scratch("matmul_backward_bias partials", &[total, n])?;
    let mut s0 = 0;
    for (rows, &count) in chunks.iter().zip(&slabs) {
        let p = BiasParams {
            m: rows.len() as u32,
            n: n as u32,
            slab: slab as u32,
            s0: s0 as u32,
            direct: 0,
        };
        let mut l = format!("{label} slabs {s0}..{}", s0 + count);
        if chunks.len() > 1 {
            l += &format!(" [{rows:?}]");
        }
        let slots = [
            partials.rows_slot(0..total, n),
            dout.rows_slot(rows.clone(), n),
        ];
        bias_launch(s, ctx, &l, slots[0], slots[1], &p, count)?;
        s0 += count;
    }
    // The slabs' sums, one slab of `total` rows.
    let p = BiasParams {
        m: total as u32,
        n: n as u32,
        slab: total as u32,
        s0: 0,
        direct: 1,
    };
    let l = format!(
        "matmul_backward_bias {} <- {} slabs",
        dbias.label, dout.label
    );
    bias_launch(
        s,
        ctx,
        &l,
        dbias.into(),
        partials.rows_slot(0..total, n),
        &p,
        1,
    )
}

/// One launch of `matmul_backward_bias`: `slabs` slabs of `p.slab` rows of `dout`.
fn bias_launch(
    s: &mut Schedule,
    ctx: &GpuContext,
    label: &str,
    out: Slot,
    dout: Slot,
    p: &BiasParams,
    slabs: usize,
) -> Result<()> {
    s.dispatch(
        ctx,
        &MATMUL_BACKWARD_BIAS,
        &[],
        label,
        &[out, dout],
        Some(p),
        [(p.n as usize).div_ceil(BIAS_COLS) as u32, slabs as u32, 1],
    )
}

/// The tied classifier: logits (M, V) = x (M, C) · wte (V, C)ᵀ. wte (147 MiB for GPT-2)
/// and logits are bound in row chunks where they exceed one binding.
#[allow(clippy::too_many_arguments)]
pub fn classifier_forward(
    s: &mut Schedule,
    ctx: &GpuContext,
    logits: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    m: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    let form = Gemm {
        trans_b: true,
        ..Gemm::default()
    };
    form.record(s, ctx, logits, x, wte, None, m, c, v)
}

/// Gradients of [`classifier_forward`], added into (`+=`) both:
/// dx (M, C) += dlogits (M, V) · wte (V, C) and dwte (V, C) += dlogitsᵀ · x (M, C).
#[allow(clippy::too_many_arguments)]
pub fn classifier_backward(
    s: &mut Schedule,
    ctx: &GpuContext,
    dx: &Tensor,
    dwte: &Tensor,
    dlogits: &Tensor,
    x: &Tensor,
    wte: &Tensor,
    m: usize,
    c: usize,
    v: usize,
) -> Result<()> {
    expect_numel(dwte, v * c)?;
    expect_numel(x, m * c)?;
    let dx_form = Gemm {
        accumulate: true,
        ..Gemm::default()
    };
    dx_form.record(s, ctx, dx, dlogits, wte, None, m, v, c)?;
    // dwte (V, C) += dlogits (M, V)ᵀ · x (M, C): dlogits is stored as op(a)ᵀ.
    let dwte_form = Gemm {
        trans_a: true,
        accumulate: true,
        ..Gemm::default()
    };
    dwte_form.record(s, ctx, dwte, dlogits, x, None, v, m, c)
}

/// One operand of [`matmul_batched`]: `tensor` read (or written) as a batch of matrices,
/// matrix (zb, zh) starting at element `off + zb·s1 + zh·s2`, rows `ld` apart.
#[derive(Clone, Copy)]
pub struct Strided<'a> {
    pub t: &'a Tensor,
    pub off: usize,
    pub ld: usize,
    pub s1: usize,
    pub s2: usize,
}

impl Strided<'_> {
    /// One past the last element the batch touches with `rows` × `cols` matrices.
    fn end(&self, (nb, nh): (usize, usize), rows: usize, cols: usize) -> usize {
        self.off + (nb - 1) * self.s1 + (nh - 1) * self.s2 + (rows - 1) * self.ld + cols
    }
}

/// The batch of products out[z] (M, N) (+)= op(a[z]) (M, K) · op(w[z]) (K, N) for
/// z = (zb, zh) in `batch` = (outer count, inner count), one launch: of the tiled kernel
/// where the device's matmuls run on it (GPUs), else of `matmul_forward_subgroup` (or its
/// wide form, see [`subgroup_wide`]), which then must exist. Attention's per-(batch,
/// head) products use it (`kernels::attention`'s matmul form). Every operand is bound
/// whole. On an H200 (2026-11-30) the tiled kernel took 0.19 ms for GPT-2's q·kᵀ over a
/// slice of 24 heads at T = 1024, where the subgroup kernel took 0.50 ms.
#[allow(clippy::too_many_arguments)]
pub fn matmul_batched(
    s: &mut Schedule,
    ctx: &GpuContext,
    gemm: Gemm,
    out: Strided,
    a: Strided,
    w: Strided,
    batch: (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    // The tiled kernel where it is the adapter's family (GPUs), else the subgroup one.
    let tiled = ctx.matmul_kernel() == MatmulKernel::Tiled;
    // The subgroup size where the subgroup kernel runs; None for the tiled kernel.
    let sg = match ctx.subgroup_size() {
        _ if tiled => None,
        Some(sg) => Some(sg),
        None => {
            return Err(Error::Invalid(
                "matmul_batched runs on the subgroup kernel (or the tiled one, where the \
                 device's matmuls run on it), which this device lacks"
                    .into(),
            ))
        }
    };
    if m == 0 || n == 0 || k == 0 || batch.0 == 0 || batch.1 == 0 {
        return Ok(());
    }
    for t in [out.t, a.t, w.t] {
        expect_dtype(t, DType::F32)?;
    }
    let (a_rows, a_cols) = if gemm.trans_a { (k, m) } else { (m, k) };
    let (w_rows, w_cols) = if gemm.trans_b { (n, k) } else { (k, n) };
    for (name, v, rows, cols) in [
        ("out", &out, m, n),
        ("a", &a, a_rows, a_cols),
        ("w", &w, w_rows, w_cols),
    ] {
        let end = v.end(batch, rows, cols);
        if end > v.t.numel() || cols > v.ld {
            return Err(Error::Invalid(format!(
                "matmul_batched: {name} {} ({} elements) is too small for {} matrices of \
                 {rows}×{cols} with ld {}, offset {} and strides ({}, {})",
                v.t.label,
                v.t.numel(),
                batch.0 * batch.1,
                v.ld,
                v.off,
                v.s1,
                v.s2
            )));
        }
        if (v.t.numel() * 4) as u64 > ctx.binding_limit() {
            return Err(Error::Invalid(format!(
                "matmul_batched: {name} {} does not fit one binding",
                v.t.label
            )));
        }
    }
    let wide = sg.is_some_and(|sg| subgroup_wide(ctx, sg, m, n));
    let mut constants = form_constants(wide, gemm.trans_a, gemm.trans_b, false, gemm.accumulate);
    if gemm.a_gelu {
        constants.push(("A_GELU", 1.0));
    }
    let u = |x: usize| x as u32;
    let p = BatchParams {
        base: MatmulParams {
            m: u(m),
            n: u(n),
            k: u(k),
            ldo: u(out.ld),
            lda: u(a.ld),
            ldw: u(w.ld),
            off_o: u(out.off),
            off_a: u(a.off),
            off_w: u(w.off),
            off_b: 0,
        },
        zh: u(batch.1),
        so1: u(out.s1),
        so2: u(out.s2),
        sa1: u(a.s1),
        sa2: u(a.s2),
        sw1: u(w.s1),
        sw2: u(w.s2),
        flags: store_flags(false, gemm.accumulate),
    };
    let label = format!(
        "matmul_batched {} <- {} · {} [{}×{}]",
        out.t.label, a.t.label, w.t.label, batch.0, batch.1
    );
    // Without a bias the binding still needs a buffer; a stands in, unread.
    let slots = [out.t.into(), a.t.into(), w.t.into(), a.t.into()];
    let z = u(batch.0 * batch.1);
    let quads = |v: &Strided, extent: usize| {
        [v.ld, v.off, v.s1, v.s2, extent]
            .iter()
            .all(|x| x.is_multiple_of(4))
    };
    let Some(sg) = sg else {
        let t = ctx.tile_config();
        constants.extend([
            ("TWX", t.wx as f64),
            ("TWY", t.wy as f64),
            ("TK", t.tk as f64),
            ("RB", t.rb as f64),
        ]);
        // vec4 staging: both operands' strides, offsets and extents along their
        // contiguous dimension multiples of 4, as in `Gemm::record`.
        let vec_a = quads(&a, if gemm.trans_a { m } else { k });
        let vec_w = quads(&w, if gemm.trans_b { k } else { n });
        let desc = match vec_a && vec_w && !t.element {
            true => &MATMUL_FORWARD_VEC4,
            false => &MATMUL_FORWARD,
        };
        let (tm, tn) = t.tile();
        let groups = [n.div_ceil(tn) as u32, m.div_ceil(tm) as u32, z];
        return s.dispatch(ctx, desc, &constants, &label, &slots, Some(&p), groups);
    };
    constants.push(("SG", sg as f64));
    let (desc, groups) = if wide {
        let vec_w = quads(&w, if gemm.trans_b { k } else { n });
        let vec_a_ta = gemm.trans_a && quads(&a, m);
        let (desc, _, groups) = subgroup_wide_launch(vec_w, vec_a_ta, sg, m, n, z);
        (desc, groups)
    } else {
        let groups = [
            n.div_ceil(4 * sg as usize) as u32,
            m.div_ceil(SUBGROUP_ROWS) as u32,
            z,
        ];
        (&MATMUL_FORWARD_SUBGROUP, groups)
    };
    s.dispatch(ctx, desc, &constants, &label, &slots, Some(&p), groups)
}
