//! Instance → adapter → device and queue, and the one object every kernel launch goes
//! through: [`GpuContext`]. It owns the pipeline cache and counts submits. Adapter choice
//! (backend and name filter) and the `info` report live here too. Nothing here blocks:
//! the only blocking helper, [`GpuContext::block_on`], is for native edges (CLI, tests).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result, NO_ADAPTER_HINT};
use crate::gpu::pipeline::{PipelineCache, ShaderChecks};
use crate::gpu::DType;
use crate::kernels::matmul::TileConfig;

/// Which graphics API to take adapters from (`--backend`, `WGFORMER_BACKEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    #[default]
    Any,
    Vulkan,
    Metal,
    Dx12,
    Gl,
    WebGpu,
}

impl BackendChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Any => wgpu::Backends::all(),
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
            BackendChoice::WebGpu => wgpu::Backends::BROWSER_WEBGPU,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "" | "any" | "all" => BackendChoice::Any,
            "vulkan" | "vk" => BackendChoice::Vulkan,
            "metal" | "mtl" => BackendChoice::Metal,
            "dx12" | "d3d12" => BackendChoice::Dx12,
            "gl" | "gles" | "opengl" => BackendChoice::Gl,
            "webgpu" | "browser" => BackendChoice::WebGpu,
            _ => return Err(Error::UnknownBackend(s.to_string())),
        })
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            BackendChoice::Any => "any",
            BackendChoice::Vulkan => "vulkan",
            BackendChoice::Metal => "metal",
            BackendChoice::Dx12 => "dx12",
            BackendChoice::Gl => "gl",
            BackendChoice::WebGpu => "webgpu",
        };
        f.write_str(s)
    }
}

/// How to pick and open the adapter. `Default` takes the best adapter of any backend.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: BackendChoice,
    /// Case-insensitive substring of the adapter's name (`--adapter`, `WGFORMER_ADAPTER`).
    pub adapter: Option<String>,
    /// Enable timestamp queries for per-kernel timing, where the adapter has them.
    pub profile: bool,
}

impl GpuOptions {
    /// Options from `WGFORMER_BACKEND` and `WGFORMER_ADAPTER`.
    pub fn from_env() -> Result<Self> {
        let backend = match std::env::var("WGFORMER_BACKEND") {
            Ok(s) => s.parse()?,
            Err(_) => BackendChoice::Any,
        };
        let adapter = std::env::var("WGFORMER_ADAPTER")
            .ok()
            .filter(|s| !s.is_empty());
        Ok(GpuOptions {
            backend,
            adapter,
            profile: false,
        })
    }

    fn describe_filter(&self) -> String {
        let mut parts = Vec::new();
        if self.backend != BackendChoice::Any {
            parts.push(format!("backend {}", self.backend));
        }
        if let Some(name) = &self.adapter {
            parts.push(format!("name containing {name:?}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" matching {}", parts.join(" and "))
        }
    }
}

/// Which kernel family matmuls run on (`WGFORMER_MATMUL`): the tiled kernel with workgroup
/// memory suits GPUs; on CPU-backed adapters, where barriers and per-lane gathers are
/// costly, the subgroup kernel (which shares loads between lanes by register shuffles)
/// where the device has fixed-size subgroups, else the row kernel. `Auto` picks by the
/// adapter's device type and features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum MatmulKernel {
    #[default]
    Auto = 0,
    Tiled = 1,
    Rows = 2,
    Subgroup = 3,
}

impl MatmulKernel {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => MatmulKernel::Tiled,
            2 => MatmulKernel::Rows,
            3 => MatmulKernel::Subgroup,
            _ => MatmulKernel::Auto,
        }
    }
}

impl FromStr for MatmulKernel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(MatmulKernel::Auto),
            "tiled" => Ok(MatmulKernel::Tiled),
            "rows" => Ok(MatmulKernel::Rows),
            "subgroup" => Ok(MatmulKernel::Subgroup),
            _ => Err(Error::Invalid(format!(
                "WGFORMER_MATMUL={s:?}: expected auto, tiled, rows or subgroup"
            ))),
        }
    }
}

/// What a workload needs beyond WebGPU's default limits. The device is opened with the
/// defaults, raised only to these values, and only where the adapter has them.
#[derive(Clone, Debug, Default)]
pub struct Needs {
    /// Largest single buffer, in bytes.
    pub max_buffer_size: u64,
    /// Largest storage-buffer binding, in bytes.
    pub max_storage_buffer_binding_size: u64,
    /// Storage (`shader-f16`) and arithmetic in f16.
    pub shader_f16: bool,
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Rank for the default choice: real GPUs before software ones, native APIs before GL.
fn adapter_rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::BrowserWebGpu => 1,
        _ => 2,
    };
    (kind, api)
}

/// Every adapter that matches `opts`, best first (see [`adapter_rank`]).
pub async fn list_adapters(opts: &GpuOptions) -> Vec<wgpu::Adapter> {
    let inst = instance(opts.backend.backends());
    let mut found: Vec<wgpu::Adapter> = if cfg!(target_arch = "wasm32") {
        inst.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .into_iter()
        .collect()
    } else {
        inst.enumerate_adapters(opts.backend.backends()).await
    };
    if let Some(want) = &opts.adapter {
        let want = want.to_lowercase();
        found.retain(|a| a.get_info().name.to_lowercase().contains(&want));
    }
    found.sort_by_key(|a| adapter_rank(&a.get_info()));
    found
}

/// The adapter `opts` selects, or an error that says how to get one.
pub async fn select_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    list_adapters(opts)
        .await
        .into_iter()
        .next()
        .ok_or_else(|| Error::NoAdapter {
            filter: opts.describe_filter(),
            hint: NO_ADAPTER_HINT,
        })
}

/// The device, its queue, the pipeline cache and a submit counter.
pub struct GpuContext {
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub(crate) pipelines: PipelineCache,
    submits: AtomicU64,
    /// Largest binding launchers plan for; the device's limit unless a test lowers it.
    binding_limit: u64,
    /// Matmul kernel family (a `MatmulKernel` as u8), resolved from `Auto` at creation:
    /// tuned where it can be (`kernels::tune`), else guessed from the device type.
    matmul_kernel: AtomicU8,
    /// The tiled kernel's tile shape, a packed `kernels::matmul::TileConfig`.
    tile_config: AtomicU32,
    /// Whether the family was left to wgformer (`WGFORMER_MATMUL` unset or `auto`).
    auto_matmul: bool,
    /// The subgroup size when the device has subgroups of one fixed size (and the shaders
    /// may use them: not in a browser, whose WGSL wants `enable subgroups`).
    subgroup_size: Option<u32>,
    /// Errors no error scope caught (in a browser: every validation error), oldest first;
    /// the next readback reports them.
    device_errors: Arc<Mutex<Vec<String>>>,
    /// Scratch tensors launchers share, by name, grown as needed ([`GpuContext::scratch`]).
    scratch: Mutex<std::collections::HashMap<&'static str, crate::gpu::Tensor>>,
}

impl GpuContext {
    /// Select an adapter by `opts` and open it with WebGPU's default limits.
    pub async fn new(opts: &GpuOptions) -> Result<Self> {
        Self::with_needs(opts, &Needs::default()).await
    }

    /// Select an adapter by `opts` and open it with the limits `needs` asks for.
    pub async fn with_needs(opts: &GpuOptions, needs: &Needs) -> Result<Self> {
        let adapter = select_adapter(opts).await?;
        Self::from_adapter(adapter, opts, needs).await
    }

    /// Open `adapter`. Limits start at WebGPU's defaults (lowered where the adapter has
    /// less, as some GL drivers do) and are raised only to what `needs` asks for.
    pub async fn from_adapter(
        adapter: wgpu::Adapter,
        opts: &GpuOptions,
        needs: &Needs,
    ) -> Result<Self> {
        let info = adapter.get_info();
        let have = adapter.limits();
        let mut limits = wgpu::Limits::defaults().or_worse_values_from(&have);
        let raise = |want: u64, cur: &mut u64, have: u64, what: &str| -> Result<()> {
            if want > *cur {
                if want > have {
                    return Err(Error::Limits {
                        adapter: info.name.clone(),
                        message: format!("needs {what} of {want} bytes, the adapter has {have}"),
                    });
                }
                *cur = want;
            }
            Ok(())
        };
        raise(
            needs.max_buffer_size,
            &mut limits.max_buffer_size,
            have.max_buffer_size,
            "max_buffer_size",
        )?;
        raise(
            needs.max_storage_buffer_binding_size,
            &mut limits.max_storage_buffer_binding_size,
            have.max_storage_buffer_binding_size,
            "max_storage_buffer_binding_size",
        )?;
        let mut features = wgpu::Features::empty();
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        if needs.shader_f16 && !has_f16 {
            return Err(Error::Limits {
                adapter: info.name.clone(),
                message: "needs shader-f16 (f16 storage and arithmetic), which the adapter \
                          lacks; run in f32 instead"
                    .into(),
            });
        }
        // Enabling it costs nothing and lets f16 paths be chosen later.
        if has_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if opts.profile && adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        let subgroup_size = (adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.backend != wgpu::Backend::BrowserWebGpu
            && info.subgroup_min_size == info.subgroup_max_size
            && info.subgroup_min_size > 0)
            .then_some(info.subgroup_min_size);
        if subgroup_size.is_some() {
            features |= wgpu::Features::SUBGROUP;
        }
        let limits_wanted = limits.clone();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgformer"),
                required_features: features,
                required_limits: limits_wanted,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let requested: MatmulKernel = match std::env::var("WGFORMER_MATMUL") {
            Ok(v) => v.parse()?,
            Err(_) => MatmulKernel::Auto,
        };
        let device_errors = Arc::new(Mutex::new(Vec::new()));
        let sink = device_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::error!("GPU error: {e}");
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        GpuContext {
            adapter,
            device,
            queue,
            info,
            pipelines: PipelineCache::new(ShaderChecks::from_env()?),
            submits: AtomicU64::new(0),
            binding_limit: limits.max_storage_buffer_binding_size,
            matmul_kernel: AtomicU8::new(MatmulKernel::Auto as u8),
            tile_config: AtomicU32::new(TileConfig::DEFAULT.pack()),
            auto_matmul: requested == MatmulKernel::Auto,
            subgroup_size,
            device_errors,
            scratch: Mutex::default(),
        }
        .with_matmul_kernel(requested)
        .tuned()
        .with_tile_from_env()
    }

    /// `WGFORMER_TILE=wx,wy,tk,rb` (invocations along N and M, K slice, register block)
    /// sets the tiled kernel's tile shape over the tuned one, to measure one shape.
    fn with_tile_from_env(self) -> Result<Self> {
        if let Ok(v) = std::env::var("WGFORMER_TILE") {
            let tile = v.parse::<TileConfig>()?;
            self.set_tile_config(tile);
        }
        Ok(self)
    }

    /// With `Auto` resolved: tuned on native targets (timed once per adapter, cached on
    /// disk by `kernels::tune`), guessed from the device type where that fails or in a
    /// browser.
    fn tuned(self) -> Self {
        if !self.auto_matmul {
            return self;
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Some((k, tile)) = crate::kernels::tune::tuned_matmul_kernel(&self) {
            self.set_matmul_kernel(k);
            self.set_tile_config(tile);
        }
        self
    }

    /// Which runtime checks our shaders are compiled with (`WGFORMER_SHADER_CHECKS`).
    pub fn shader_checks(&self) -> ShaderChecks {
        self.pipelines.checks()
    }

    /// Compile shaders with `checks` from now on: a fresh pipeline cache (tests compare
    /// the modes on one device). The matmul family and tile stay as tuned.
    pub fn with_shader_checks(mut self, checks: ShaderChecks) -> Self {
        if checks != self.pipelines.checks() {
            self.pipelines = PipelineCache::new(checks);
        }
        self
    }

    /// "name (backend, device type)": how logs and reports name this adapter.
    pub fn adapter_name(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// `kernel` with `Auto` replaced by the device-type guess, the subgroup kernel by
    /// the row kernel where the device has no fixed-size subgroups, and every family by
    /// the tiled kernel on SwiftShader ([`GpuContext::is_swiftshader`]).
    fn resolve_matmul(&self, kernel: MatmulKernel) -> MatmulKernel {
        let cpu = self.info.device_type == wgpu::DeviceType::Cpu;
        match kernel {
            _ if self.is_swiftshader() => MatmulKernel::Tiled,
            MatmulKernel::Auto if cpu && self.subgroup_size.is_some() => MatmulKernel::Subgroup,
            MatmulKernel::Auto if cpu => MatmulKernel::Rows,
            MatmulKernel::Auto => MatmulKernel::Tiled,
            // Asked for on a device without fixed-size subgroups: the next best.
            MatmulKernel::Subgroup if self.subgroup_size.is_none() => MatmulKernel::Rows,
            k => k,
        }
    }

    /// Whether matmuls can run on `family` here (it resolves to itself): not the subgroup
    /// family without fixed-size subgroups, only the tiled one on SwiftShader.
    pub fn runs_matmul_family(&self, family: MatmulKernel) -> bool {
        family != MatmulKernel::Auto && self.resolve_matmul(family) == family
    }

    /// The oldest GPU error no error scope caught since the last call (with a count of
    /// any later ones), if there was one. Readbacks check it, so such an error fails the
    /// next read instead of passing unnoticed.
    pub fn take_device_error(&self) -> Option<String> {
        let mut v = self.device_errors.lock().ok()?;
        let first = v.first()?.clone();
        let more = v.len() - 1;
        v.clear();
        Some(if more > 0 {
            format!("{first} (and {more} more errors)")
        } else {
            first
        })
    }

    /// Whether the adapter runs on the CPU (lavapipe, llvmpipe, SwiftShader, WARP), where
    /// barriers and workgroup memory cost more than on a GPU and kernels that reduce across
    /// a workgroup are best given few invocations.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the adapter is SwiftShader's Vulkan driver (Google's CPU Vulkan, which
    /// Chromium ships), opened natively rather than through a browser's WebGPU. Its
    /// Subzero JIT cannot compile the CPU matmul families' big unrolled kernels: the row
    /// kernel with A_GELU and the wide subgroup kernel each grew the process past 16 GB
    /// until it died of `std::bad_alloc` (Debian's Chromium 5.0 ICD, 2026-12-01). So
    /// matmuls there run on the tiled kernel, which the tuner found the fastest family
    /// there anyway (2.5 GFLOP/s; rows 2.3, subgroup 1.7).
    pub fn is_swiftshader(&self) -> bool {
        self.info.backend != wgpu::Backend::BrowserWebGpu
            && self.info.name.to_lowercase().contains("swiftshader")
    }

    /// The subgroup size, when the device has subgroups of one fixed size that shaders
    /// may use.
    pub fn subgroup_size(&self) -> Option<u32> {
        self.subgroup_size
    }

    /// The matmul kernel family launchers use on this device (never `Auto`).
    pub fn matmul_kernel(&self) -> MatmulKernel {
        MatmulKernel::from_u8(self.matmul_kernel.load(Ordering::Relaxed))
    }

    /// Use `kernel` for matmuls from now on (tests run both families on every adapter).
    pub fn with_matmul_kernel(self, kernel: MatmulKernel) -> Self {
        self.set_matmul_kernel(kernel);
        self
    }

    /// Use `kernel` for matmuls recorded from now on (the tuner times each family on the
    /// context it tunes; schedules already recorded keep their kernels).
    pub fn set_matmul_kernel(&self, kernel: MatmulKernel) {
        let k = self.resolve_matmul(kernel);
        self.matmul_kernel.store(k as u8, Ordering::Relaxed);
    }

    /// The tile shape of the tiled matmul kernel (tuned per adapter with the family).
    pub fn tile_config(&self) -> TileConfig {
        TileConfig::unpack(self.tile_config.load(Ordering::Relaxed))
    }

    /// Use `tile` for the tiled matmul kernel from now on (pipelines are keyed by it).
    pub fn set_tile_config(&self, tile: TileConfig) {
        self.tile_config.store(tile.pack(), Ordering::Relaxed);
    }

    /// An f32 scratch tensor of `shape` named `name`, shared by every launch that asks
    /// for that name: the buffer is allocated on first use and replaced by a larger one
    /// when a launch needs more (a schedule already recorded keeps the buffer it bound).
    /// For the partial results one launch writes and the next reads, within one launcher:
    /// launches of a submit run in order, so those pairs never overlap. A launcher that
    /// needs two at once uses two names.
    pub fn scratch(&self, name: &'static str, shape: &[usize]) -> Result<crate::gpu::Tensor> {
        let numel: usize = shape.iter().product();
        let mut map = self.scratch.lock().map_err(|_| {
            Error::Invalid(format!(
                "scratch {name}: a thread panicked while holding it"
            ))
        })?;
        let fits = map.get(name).is_some_and(|t| t.numel() >= numel);
        if !fits {
            // Grow by at least half, so a run of slightly larger requests allocates once.
            let have = map.get(name).map_or(0, |t| t.numel());
            let grown = numel.max(have + have / 2).max(1);
            let t = crate::gpu::Tensor::zeros(self, name, &[grown], DType::F32)
                .or_else(|_| crate::gpu::Tensor::zeros(self, name, &[numel.max(1)], DType::F32))?;
            map.insert(name, t);
        }
        let mut view = map[name].clone();
        view.shape = shape.to_vec();
        Ok(view)
    }

    /// Largest storage binding, in bytes, that launchers split tensors to fit.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// Plan bindings as if the device allowed only `bytes` per binding, so tests can
    /// exercise the split paths (the embedding, the classifier) at small sizes.
    pub fn with_binding_limit(mut self, bytes: u64) -> Self {
        self.binding_limit = bytes.min(self.device.limits().max_storage_buffer_binding_size);
        self
    }

    /// Split `rows` rows of `row_elems` 4-byte elements into ranges, each of which can
    /// be bound on its own: at most [`binding_limit`](Self::binding_limit) bytes, and
    /// starting at a byte offset the device accepts for storage bindings.
    pub fn row_chunks(&self, rows: usize, row_elems: usize) -> Vec<std::ops::Range<usize>> {
        self.row_chunks_of(DType::F32, rows, row_elems)
    }

    /// [`row_chunks`](Self::row_chunks) for elements of `dtype`.
    pub fn row_chunks_of(
        &self,
        dtype: DType,
        rows: usize,
        row_elems: usize,
    ) -> Vec<std::ops::Range<usize>> {
        let align = self.device.limits().min_storage_buffer_offset_alignment as u64;
        // Bound sizes are rounded up to whole words, which stays within a word-sized limit.
        binding_chunks(
            rows,
            (row_elems * dtype.size()) as u64,
            self.binding_limit,
            align,
        )
    }

    /// Whether the device was opened with `shader-f16` (opened with it wherever the
    /// adapter has it): f16 tensors can then be bound, and f16 kernels compiled.
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Whether per-kernel GPU timing is available on this device.
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Every submit of the crate goes through here, so tests can count them.
    pub fn submit(&self, commands: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit(std::iter::once(commands))
    }

    /// Number of `queue.submit` calls made through this context so far.
    pub fn submit_count(&self) -> u64 {
        self.submits.load(Ordering::Relaxed)
    }

    /// Number of compute pipelines compiled so far (each key is compiled once).
    pub fn pipelines_compiled(&self) -> usize {
        self.pipelines.compiled()
    }

    /// Drive `fut` to completion on a native thread, polling the device while it waits.
    /// This is the only blocking entry of the library, for the CLI and tests; the browser
    /// build awaits the same futures from the event loop instead.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        pollster::block_on(std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(v),
            std::task::Poll::Pending => {
                // Map callbacks fire from inside poll; wait for the queue, then try again.
                let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }))
    }
}

/// Split `rows` rows of `row_bytes` bytes into consecutive ranges whose byte size is at
/// most `max_binding` and whose first row starts at a multiple of `align` bytes.
/// Panics if a single aligned group of rows cannot fit in `max_binding`.
pub fn binding_chunks(
    rows: usize,
    row_bytes: u64,
    max_binding: u64,
    align: u64,
) -> Vec<std::ops::Range<usize>> {
    if rows == 0 {
        return vec![std::ops::Range { start: 0, end: 0 }];
    }
    // Smallest row count whose byte size is a multiple of `align`.
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let quantum = (align / gcd(align, row_bytes.max(1))).max(1);
    let fit = max_binding / row_bytes.max(1);
    let per_chunk = (fit / quantum) * quantum;
    assert!(
        per_chunk > 0,
        "a row of {row_bytes} bytes cannot be bound within {max_binding} bytes at alignment {align}"
    );
    (0..rows)
        .step_by(per_chunk as usize)
        .map(|r| r..(r + per_chunk as usize).min(rows))
        .collect()
}

/// The facts `wgformer info` prints about one adapter.
pub struct AdapterReport {
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
}

impl AdapterReport {
    pub fn of(adapter: &wgpu::Adapter) -> Self {
        AdapterReport {
            info: adapter.get_info(),
            limits: adapter.limits(),
            features: adapter.features(),
        }
    }
}

/// A plain-words name for Mesa's and Chromium's CPU drivers, whose adapter names do not
/// say what they are (lavapipe reports itself as "llvmpipe").
fn software_driver(i: &wgpu::AdapterInfo) -> Option<&'static str> {
    let name = i.name.to_lowercase();
    match i.backend {
        wgpu::Backend::Vulkan if name.starts_with("llvmpipe") => {
            Some("Mesa lavapipe: software Vulkan on the CPU")
        }
        wgpu::Backend::Vulkan if name.contains("swiftshader") => {
            Some("SwiftShader: software Vulkan on the CPU")
        }
        wgpu::Backend::Gl if name.starts_with("llvmpipe") => {
            Some("Mesa llvmpipe: software OpenGL on the CPU")
        }
        _ => None,
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

impl fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, l, feat) = (&self.info, &self.limits, self.features);
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "{}", i.name)?;
        if let Some(what) = software_driver(i) {
            writeln!(f, "  ({what})")?;
        }
        writeln!(f, "  backend:                       {:?}", i.backend)?;
        writeln!(f, "  device type:                   {:?}", i.device_type)?;
        writeln!(
            f,
            "  driver:                        {} {}",
            i.driver, i.driver_info
        )?;
        writeln!(
            f,
            "  max storage-buffer binding:    {}",
            mib(l.max_storage_buffer_binding_size)
        )?;
        writeln!(
            f,
            "  max uniform-buffer binding:    {}",
            mib(l.max_uniform_buffer_binding_size)
        )?;
        writeln!(
            f,
            "  max buffer size:               {}",
            mib(l.max_buffer_size)
        )?;
        writeln!(
            f,
            "  storage buffers per stage:     {}",
            l.max_storage_buffers_per_shader_stage
        )?;
        writeln!(
            f,
            "  workgroup memory:              {}",
            mib(l.max_compute_workgroup_storage_size as u64)
        )?;
        writeln!(
            f,
            "  invocations per workgroup:     {}",
            l.max_compute_invocations_per_workgroup
        )?;
        writeln!(
            f,
            "  workgroups per dimension:      {}",
            l.max_compute_workgroups_per_dimension
        )?;
        writeln!(
            f,
            "  shader-f16:                    {}",
            yes(feat.contains(wgpu::Features::SHADER_F16))
        )?;
        writeln!(
            f,
            "  subgroups:                     {}",
            yes(feat.contains(wgpu::Features::SUBGROUP))
        )?;
        write!(
            f,
            "  timestamp queries:             {}",
            yes(feat.contains(wgpu::Features::TIMESTAMP_QUERY))
        )
    }
}
