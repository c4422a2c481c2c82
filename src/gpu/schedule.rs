//! The scheduler: a [`Schedule`] records kernel launches (pipeline, bind group, workgroup
//! counts, label) and buffer copies once; [`Schedule::run`] encodes all of them into one
//! command encoder and one `queue.submit`. Nothing is allocated and no bind group is made
//! on replay. Consecutive dispatches share one compute pass; wgpu inserts the barriers
//! between dependent dispatches. Per-kernel GPU time comes from [`Profiler`], where the
//! adapter has timestamp queries.
//!
//! Values that change between replays (a learning rate, a step count) are not recorded:
//! they live in buffers the caller rewrites with `queue.write_buffer` before `run`.

use std::sync::Arc;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::pipeline::{Binding, Constants, Kernel, KernelDesc};
use crate::gpu::tensor::{Readback, Tensor};
use crate::gpu::GpuContext;

/// A buffer range bound to one `@binding` of a kernel.
#[derive(Clone, Copy)]
pub struct Slot<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    /// Bytes; `None` binds to the end of the buffer.
    pub size: Option<u64>,
    pub label: &'a str,
}

impl<'a> From<&'a Tensor> for Slot<'a> {
    fn from(t: &'a Tensor) -> Self {
        Slot {
            buffer: &t.buffer,
            offset: 0,
            size: None,
            label: &t.label,
        }
    }
}

enum Op {
    Dispatch {
        kernel: Arc<Kernel>,
        bind_group: wgpu::BindGroup,
        workgroups: [u32; 3],
        label: String,
    },
    Copy {
        src: wgpu::Buffer,
        src_offset: u64,
        dst: wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    },
    Clear {
        buffer: wgpu::Buffer,
    },
}

/// Fold a 1-D launch wider than `max` workgroups into 2-D. Kernels recover the linear
/// workgroup index as `wg.x + wg.y * num_wg.x` (`linear_workgroup` in common.wgsl) and
/// bound-check, since the folded grid may hold a few workgroups more than asked.
pub fn fold_workgroups(workgroups: [u32; 3], max: u32) -> [u32; 3] {
    let [x, y, z] = workgroups;
    if x <= max && y <= max && z <= max {
        return workgroups;
    }
    assert!(
        y == 1 && z == 1,
        "only 1-D launches are folded; got {workgroups:?} with a limit of {max}"
    );
    let rows = x.div_ceil(max);
    let cols = x.div_ceil(rows);
    [cols, rows, 1]
}

/// A recorded sequence of launches and copies, replayed with one submit.
pub struct Schedule {
    pub label: String,
    ops: Vec<Op>,
}

impl Schedule {
    pub fn new(label: &str) -> Self {
        Schedule {
            label: label.to_string(),
            ops: Vec::new(),
        }
    }

    /// Number of kernel launches recorded.
    pub fn launches(&self) -> usize {
        self.ops
            .iter()
            .filter(|op| matches!(op, Op::Dispatch { .. }))
            .count()
    }

    /// The labels of the recorded launches, in order (they start with the kernel's
    /// name), so tests can check which kernel a launcher picked.
    pub fn launch_labels(&self) -> Vec<&str> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Dispatch { label, .. } => Some(label.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Record a launch of `desc` with `constants`. `slots` are the storage bindings in
    /// binding order; `params`, if the kernel has a uniform, is uploaded once, here, into a
    /// buffer the bind group keeps alive. `workgroups` may exceed the per-dimension limit
    /// in x for 1-D kernels (see [`fold_workgroups`]).
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch<P: Pod>(
        &mut self,
        ctx: &GpuContext,
        desc: &KernelDesc,
        constants: Constants,
        label: &str,
        slots: &[Slot],
        params: Option<&P>,
        workgroups: [u32; 3],
    ) -> Result<()> {
        let kernel = ctx.pipelines.get(&ctx.device, desc, constants)?;
        let want_uniform = kernel.bindings.last() == Some(&Binding::Uniform);
        let n_storage = kernel.bindings.len() - want_uniform as usize;
        assert_eq!(
            slots.len(),
            n_storage,
            "{label}: {} takes {n_storage} storage bindings, got {}",
            kernel.label,
            slots.len()
        );
        assert_eq!(
            params.is_some(),
            want_uniform,
            "{label}: params given to {} do not match its layout",
            kernel.label
        );
        let limits = ctx.device.limits();
        let mut entries = Vec::with_capacity(kernel.bindings.len());
        for (i, s) in slots.iter().enumerate() {
            let bytes = s.size.unwrap_or(s.buffer.size() - s.offset);
            if bytes > limits.max_storage_buffer_binding_size {
                return Err(Error::TooLarge {
                    tensor: s.label.to_string(),
                    bytes,
                    limit: limits.max_storage_buffer_binding_size,
                    what: "max_storage_buffer_binding_size",
                });
            }
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: s.buffer,
                    offset: s.offset,
                    size: s.size.and_then(wgpu::BufferSize::new),
                }),
            });
        }
        let uniform;
        if let Some(p) = params {
            // Uniform structs are laid out in 16-byte units; pad the Rust mirror to match.
            let mut bytes = bytemuck::bytes_of(p).to_vec();
            bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
            uniform = ctx
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: &bytes,
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            entries.push(wgpu::BindGroupEntry {
                binding: slots.len() as u32,
                resource: uniform.as_entire_binding(),
            });
        }
        let (bind_group, err) = crate::gpu::validated(&ctx.device, || {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &kernel.layout,
                entries: &entries,
            })
        });
        if let Some(e) = err {
            return Err(Error::Gpu {
                label: label.to_string(),
                message: e.to_string(),
            });
        }
        let workgroups = fold_workgroups(workgroups, limits.max_compute_workgroups_per_dimension);
        self.ops.push(Op::Dispatch {
            kernel,
            bind_group,
            workgroups,
            label: label.to_string(),
        });
        Ok(())
    }

    /// Record a copy of `size` bytes between buffers.
    pub fn copy(&mut self, src: Slot, dst: Slot, size: u64) {
        self.ops.push(Op::Copy {
            src: src.buffer.clone(),
            src_offset: src.offset,
            dst: dst.buffer.clone(),
            dst_offset: dst.offset,
            size,
        });
    }

    /// Record zeroing the whole of `t` (gradients before a step's backward pass).
    pub fn clear(&mut self, t: &Tensor) {
        self.ops.push(Op::Clear {
            buffer: t.buffer.clone(),
        });
    }

    /// Record a copy of the whole of `src` into the staging buffer `dst`.
    pub fn read_into(&mut self, src: &Tensor, dst: &Readback) {
        let size = src.size_bytes().min(dst.size);
        self.copy(src.into(), Slot::from_readback(dst), size);
    }

    /// Encode every op into `encoder`, dispatches grouped into compute passes.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut i = 0;
        while i < self.ops.len() {
            match &self.ops[i] {
                Op::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                    i += 1;
                }
                Op::Clear { buffer } => {
                    encoder.clear_buffer(buffer, 0, None);
                    i += 1;
                }
                Op::Dispatch { .. } => {
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(&self.label),
                        timestamp_writes: None,
                    });
                    while let Some(Op::Dispatch {
                        kernel,
                        bind_group,
                        workgroups: [x, y, z],
                        ..
                    }) = self.ops.get(i)
                    {
                        pass.set_pipeline(&kernel.pipeline);
                        pass.set_bind_group(0, bind_group, &[]);
                        pass.dispatch_workgroups(*x, *y, *z);
                        i += 1;
                    }
                }
            }
        }
    }

    /// Replay the schedule: one encoder, one submit.
    pub fn run(&self, ctx: &GpuContext) -> wgpu::SubmissionIndex {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&self.label),
            });
        self.encode(&mut encoder);
        ctx.submit(encoder.finish())
    }

    /// Replay with a timestamp pair around each launch (one pass per launch), in one
    /// submit. `profiler` must have been made for this schedule.
    pub fn run_profiled(&self, ctx: &GpuContext, profiler: &Profiler) {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&self.label),
            });
        let mut launch = 0u32;
        for op in &self.ops {
            match op {
                Op::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size),
                Op::Clear { buffer } => encoder.clear_buffer(buffer, 0, None),
                Op::Dispatch {
                    kernel,
                    bind_group,
                    workgroups: [x, y, z],
                    label,
                } => {
                    let set = (launch / Profiler::LAUNCHES_PER_SET) as usize;
                    let q = (launch % Profiler::LAUNCHES_PER_SET) * 2;
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &profiler.sets[set],
                            beginning_of_pass_write_index: Some(q),
                            end_of_pass_write_index: Some(q + 1),
                        }),
                    });
                    pass.set_pipeline(&kernel.pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(*x, *y, *z);
                    launch += 1;
                }
            }
        }
        for (s, set) in profiler.sets.iter().enumerate() {
            let first = s as u32 * Profiler::LAUNCHES_PER_SET;
            let n = (launch - first).min(Profiler::LAUNCHES_PER_SET) * 2;
            let offset = s as u64 * Profiler::LAUNCHES_PER_SET as u64 * 16;
            encoder.resolve_query_set(set, 0..n, &profiler.resolve, offset);
        }
        encoder.copy_buffer_to_buffer(
            &profiler.resolve,
            0,
            &profiler.readback.buffer,
            0,
            profiler.readback.size,
        );
        ctx.submit(encoder.finish());
    }

    fn labels(&self) -> Vec<(String, String)> {
        self.ops
            .iter()
            .filter_map(|op| match op {
                Op::Dispatch { kernel, label, .. } => Some((label.clone(), kernel.label.clone())),
                Op::Copy { .. } | Op::Clear { .. } => None,
            })
            .collect()
    }
}

impl<'a> Slot<'a> {
    pub fn from_readback(r: &'a Readback) -> Self {
        Slot {
            buffer: &r.buffer,
            offset: 0,
            size: Some(r.size),
            label: &r.label,
        }
    }
}

/// GPU time of one launch of a profiled run.
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// The launch's own label ("h.0.attn.c_attn").
    pub label: String,
    /// The pipeline's label ("matmul::matmul_forward[...]").
    pub kernel: String,
    pub nanos: f64,
}

/// Query sets and buffers for timing each launch of one schedule; made once per schedule.
pub struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    resolve: wgpu::Buffer,
    readback: Readback,
    labels: Vec<(String, String)>,
}

impl Profiler {
    const LAUNCHES_PER_SET: u32 = 2048;

    /// `None` when the device was opened without timestamp queries.
    pub fn new(ctx: &GpuContext, schedule: &Schedule) -> Option<Self> {
        if !ctx.has_timestamps() {
            return None;
        }
        let labels = schedule.labels();
        let n = labels.len().max(1) as u32;
        let n_sets = n.div_ceil(Self::LAUNCHES_PER_SET);
        let sets = (0..n_sets)
            .map(|s| {
                let count = (n - s * Self::LAUNCHES_PER_SET).min(Self::LAUNCHES_PER_SET) * 2;
                ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("profiler"),
                    ty: wgpu::QueryType::Timestamp,
                    count,
                })
            })
            .collect();
        let bytes = n_sets as u64 * Self::LAUNCHES_PER_SET as u64 * 16;
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profiler resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = Readback::new(ctx, "profiler", bytes);
        Some(Profiler {
            sets,
            resolve,
            readback,
            labels,
        })
    }

    /// Per-launch times of the last [`Schedule::run_profiled`].
    pub async fn read(&self, ctx: &GpuContext) -> Result<Vec<KernelTime>> {
        let ticks: Vec<u64> = self.readback.read(ctx).await?;
        let period = ctx.queue.get_timestamp_period() as f64;
        Ok(self
            .labels
            .iter()
            .enumerate()
            .map(|(i, (label, kernel))| KernelTime {
                label: label.clone(),
                kernel: kernel.clone(),
                nanos: ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period,
            })
            .collect())
    }
}

/// Sum `times` by pipeline, largest first: (pipeline label, launches, total ns).
pub fn summarize(times: &[KernelTime]) -> Vec<(String, usize, f64)> {
    let mut by: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
    for t in times {
        let e = by.entry(&t.kernel).or_default();
        e.0 += 1;
        e.1 += t.nanos;
    }
    let mut v: Vec<_> = by
        .into_iter()
        .map(|(k, (n, ns))| (k.to_string(), n, ns))
        .collect();
    v.sort_by(|a, b| b.2.total_cmp(&a.2));
    v
}
