//! Shaders and the pipeline cache. Every WGSL file in `shaders/` is embedded at compile
//! time as a [`Shader`]; a kernel is a [`KernelDesc`]: its shader, entry point and the
//! kinds of its bindings in binding order (outputs, inputs, then the params uniform).
//! [`PipelineCache`] compiles each (shader, entry, override constants) once, with an
//! explicit bind group layout built from the descriptor. It does not record or run
//! anything; that is the scheduler's job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// One WGSL source file, embedded at compile time. Every shader is compiled with
/// `shaders/common.wgsl` in front of it (its line numbers are therefore offset by that
/// prelude's length in compiler messages).
pub struct Shader {
    pub name: &'static str,
    /// Put before the common prelude: `enable` directives and the aliases a variant of a
    /// shared source is made with (`W_T` of the matmul shaders).
    pub prelude: &'static str,
    pub source: &'static str,
}

impl Shader {
    /// The module as compiled: the prelude, the common helpers, then the source.
    pub fn compiled_source(&self) -> String {
        format!("{}\n{COMMON_WGSL}\n{}", self.prelude, self.source)
    }

    /// Whether compiling it needs the device's `shader-f16`.
    pub fn needs_f16(&self) -> bool {
        self.prelude.contains("enable f16")
    }
}

/// The WGSL helpers every shader may use.
pub const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");

/// The kind of one binding of a kernel, in `@binding` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`: the kernel's params struct.
    Uniform,
}

/// A kernel: WGSL entry point, its file and its bindings. Declared as a `const` beside
/// the launcher that shares its name.
pub struct KernelDesc {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub bindings: &'static [Binding],
}

/// A compiled pipeline and the layout its bind groups are made against.
pub struct Kernel {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: &'static [Binding],
}

/// Which of wgpu's runtime checks naga writes into wgformer's shaders
/// (`WGFORMER_SHADER_CHECKS`).
///
/// wgpu guards every shader as if it came from an untrusted web page. One guard, the
/// forced loop bound, gives each loop a 64-bit iteration counter so that no loop can be
/// proven infinite (which downstream compilers may treat as undefined behaviour). It costs
/// little on Mesa's LLVM, but it keeps some GPU compilers from unrolling loops: wgpu's
/// issue #7698 reports kernels going 100x slower, and an array indexed in a loop that is
/// not unrolled lands in local memory on NVIDIA's driver. Our shaders are ours and every
/// loop in them is counted, so by default they are compiled without it. Bounds checks
/// (a clamp on every index into a workgroup or private array, and on buffer indices
/// where the driver has no robust access of its own) and the guards on integer division
/// stay on by default; `unchecked` drops them too, to measure what they cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShaderChecks {
    /// wgpu's checks less the forced loop bound (the default; `trusted`).
    #[default]
    Trusted,
    /// Every check wgpu puts in an untrusted shader (`all`): to measure what the loop
    /// bound costs, or to rule it out when a kernel misbehaves.
    All,
    /// None of wgpu's checks (`unchecked`): an index out of bounds is undefined
    /// behaviour. For measuring only.
    Unchecked,
}

impl ShaderChecks {
    /// From `WGFORMER_SHADER_CHECKS` (unset: [`ShaderChecks::Trusted`]).
    pub fn from_env() -> Result<Self> {
        match std::env::var("WGFORMER_SHADER_CHECKS") {
            Ok(v) => v.parse(),
            Err(_) => Ok(ShaderChecks::default()),
        }
    }

    /// The checks wgpu is asked for.
    pub fn runtime_checks(self) -> wgpu::ShaderRuntimeChecks {
        match self {
            ShaderChecks::Trusted => wgpu::ShaderRuntimeChecks {
                force_loop_bounding: false,
                ..wgpu::ShaderRuntimeChecks::checked()
            },
            ShaderChecks::All => wgpu::ShaderRuntimeChecks::checked(),
            // For measuring our own kernels, which the tests hold to their references
            // in every mode.
            ShaderChecks::Unchecked => wgpu::ShaderRuntimeChecks::unchecked(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ShaderChecks::Trusted => "trusted",
            ShaderChecks::All => "all",
            ShaderChecks::Unchecked => "unchecked",
        }
    }

    /// How reports name the mode.
    pub fn describe(self) -> &'static str {
        match self {
            ShaderChecks::Trusted => "wgpu's, less the forced loop bound",
            ShaderChecks::All => "all of wgpu's (WGFORMER_SHADER_CHECKS=all)",
            ShaderChecks::Unchecked => "none (WGFORMER_SHADER_CHECKS=unchecked)",
        }
    }
}

impl std::str::FromStr for ShaderChecks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "trusted" => Ok(ShaderChecks::Trusted),
            "all" => Ok(ShaderChecks::All),
            "unchecked" => Ok(ShaderChecks::Unchecked),
            _ => Err(Error::Invalid(format!(
                "WGFORMER_SHADER_CHECKS={s:?}: expected trusted (the default: no forced loop \
                 bound), all (every runtime check wgpu adds to untrusted shaders) or \
                 unchecked (none)"
            ))),
        }
    }
}

/// Override constants by name; part of the pipeline key.
pub type Constants<'a> = &'a [(&'a str, f64)];

#[derive(Clone, PartialEq, Eq, Hash)]
struct PipelineKey {
    shader: &'static str,
    entry: &'static str,
    constants: Vec<(String, u64)>,
}

/// Compiles each pipeline once and hands out shared references to it.
#[derive(Default)]
pub struct PipelineCache {
    checks: ShaderChecks,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
}

impl PipelineCache {
    /// An empty cache whose shaders will be compiled with `checks`.
    pub fn new(checks: ShaderChecks) -> Self {
        PipelineCache {
            checks,
            ..Default::default()
        }
    }

    pub fn checks(&self) -> ShaderChecks {
        self.checks
    }

    pub fn compiled(&self) -> usize {
        self.pipelines.lock().unwrap().len()
    }

    /// The pipeline for `desc` with `constants`, compiled on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        desc: &KernelDesc,
        constants: Constants,
    ) -> Result<Arc<Kernel>> {
        let mut consts: Vec<(String, u64)> = constants
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_bits()))
            .collect();
        consts.sort();
        let key = PipelineKey {
            shader: desc.shader.name,
            entry: desc.entry,
            constants: consts,
        };
        if let Some(k) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let label = if constants.is_empty() {
            format!("{}::{}", desc.shader.name, desc.entry)
        } else {
            let c: Vec<String> = constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}::{}[{}]", desc.shader.name, desc.entry, c.join(","))
        };
        let shader_err = |message: String| Error::Shader {
            shader: desc.shader.name.to_string(),
            entry: desc.entry.to_string(),
            message,
        };

        #[cfg(not(target_arch = "wasm32"))]
        let started = std::time::Instant::now();
        let ((layout, pipeline), err) = crate::gpu::validated(device, || {
            let module = {
                let mut modules = self.modules.lock().unwrap();
                modules
                    .entry(desc.shader.name)
                    .or_insert_with(|| {
                        let source = desc.shader.compiled_source();
                        let module = wgpu::ShaderModuleDescriptor {
                            label: Some(desc.shader.name),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        };
                        // SAFETY: by default the only check left out is the forced loop
                        // bound, and these are our own shaders, whose loops are all
                        // counted and end; `unchecked` is opted into for measuring.
                        unsafe {
                            device
                                .create_shader_module_trusted(module, self.checks.runtime_checks())
                        }
                    })
                    .clone()
            };
            let entries: Vec<wgpu::BindGroupLayoutEntry> = desc
                .bindings
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match b {
                            Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Binding::ReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                            Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&label),
                entries: &entries,
            });
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(desc.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            (layout, pipeline)
        });
        // On native backends validation is synchronous, so the error is already known;
        // in the browser it surfaces through the device's uncaptured-error handler.
        if let Some(err) = err {
            self.modules.lock().unwrap().remove(desc.shader.name);
            return Err(shader_err(err.to_string()));
        }
        // GPU drivers compile here, so `RUST_LOG=wgformer=debug` shows where a cold start's
        // time goes. Mesa's lavapipe and llvmpipe compile at the pipeline's first dispatch
        // instead, which this does not see.
        #[cfg(not(target_arch = "wasm32"))]
        log::debug!(
            "pipeline {label}: created in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let kernel = Arc::new(Kernel {
            label,
            pipeline,
            layout,
            bindings: desc.bindings,
        });
        self.pipelines.lock().unwrap().insert(key, kernel.clone());
        Ok(kernel)
    }
}
