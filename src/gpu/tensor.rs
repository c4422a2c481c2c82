//! GPU tensors: a storage buffer with a shape, an element type and a label, plus upload
//! and readback. Readback goes through `map_async` and its callback and is awaited, never
//! polled for: the native edge drives it with [`GpuContext::block_on`], the browser with
//! its event loop. A [`Readback`] is a staging buffer allocated once, for values a step
//! reads back every time (the loss, a sampled token); [`Tensor::read`] makes a fresh one
//! and is for tests and one-off reads.

use std::fmt;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, Slot};

/// Element type of a tensor. `F16` (IEEE half) needs the device's `shader-f16` in any
/// kernel that binds it; buffers of it are padded to a whole number of 4-byte words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
    I32,
    F16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F16 => 2,
            _ => 4,
        }
    }

    /// Bytes `numel` elements take in a buffer: wgpu copies and binds whole 4-byte words.
    pub fn bytes(self, numel: usize) -> u64 {
        ((numel * self.size()) as u64).div_ceil(4) * 4
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::F16 => "f16",
        })
    }
}

/// A buffer on the device with a row-major shape. A clone shares the device buffer.
#[derive(Clone)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub label: String,
}

const TENSOR_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// A zero-filled tensor.
    pub fn zeros(ctx: &GpuContext, label: &str, shape: &[usize], dtype: DType) -> Result<Self> {
        let bytes = Self::check_size(ctx, label, shape, dtype)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: TENSOR_USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// A tensor holding `data`, which must have as many elements as `shape`.
    pub fn from_slice<T: Pod>(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        dtype: DType,
        data: &[T],
    ) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if data.len() != numel || std::mem::size_of::<T>() != dtype.size() {
            return Err(Error::Shape {
                tensor: label.to_string(),
                expected: shape.to_vec(),
                found: vec![data.len()],
            });
        }
        Self::check_size(ctx, label, shape, dtype)?;
        let mut contents: Vec<u8> = bytemuck::cast_slice(data).to_vec();
        contents.resize(dtype.bytes(numel.max(1)) as usize, 0);
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: TENSOR_USAGE,
            });
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    pub fn from_f32(ctx: &GpuContext, label: &str, shape: &[usize], data: &[f32]) -> Result<Self> {
        Self::from_slice(ctx, label, shape, DType::F32, data)
    }

    pub fn from_u32(ctx: &GpuContext, label: &str, shape: &[usize], data: &[u32]) -> Result<Self> {
        Self::from_slice(ctx, label, shape, DType::U32, data)
    }

    pub fn from_i32(ctx: &GpuContext, label: &str, shape: &[usize], data: &[i32]) -> Result<Self> {
        Self::from_slice(ctx, label, shape, DType::I32, data)
    }

    /// An f16 tensor holding `data` rounded to the nearest f16 (ties to even).
    pub fn from_f32_as_f16(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<Self> {
        let half: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
        Self::from_slice(ctx, label, shape, DType::F16, &half)
    }

    /// Bytes the buffer for `shape` takes; errors if it exceeds the device's buffer limit.
    fn check_size(ctx: &GpuContext, label: &str, shape: &[usize], dtype: DType) -> Result<u64> {
        let numel: usize = shape.iter().product();
        // wgpu refuses zero-sized bindings; an empty tensor keeps one element of storage.
        let bytes = dtype.bytes(numel.max(1));
        let limit = ctx.device.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::TooLarge {
                tensor: label.to_string(),
                bytes,
                limit,
                what: "max_buffer_size",
            });
        }
        Ok(bytes)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data (not counting the one-element minimum of an empty tensor), padded
    /// to whole 4-byte words.
    pub fn size_bytes(&self) -> u64 {
        self.dtype.bytes(self.numel())
    }

    /// Error unless the tensor has exactly `shape`.
    pub fn expect_shape(&self, shape: &[usize]) -> Result<()> {
        if self.shape != shape {
            return Err(Error::Shape {
                tensor: self.label.clone(),
                expected: shape.to_vec(),
                found: self.shape.clone(),
            });
        }
        Ok(())
    }

    /// A binding of rows `rows` of this tensor seen as (rows, row_elems); pair it with
    /// [`GpuContext::row_chunks`] so the offset is aligned and the size fits.
    pub fn rows_slot(&self, rows: std::ops::Range<usize>, row_elems: usize) -> Slot<'_> {
        let row_bytes = (row_elems * self.dtype.size()) as u64;
        Slot {
            buffer: &self.buffer,
            offset: rows.start as u64 * row_bytes,
            // Whole 4-byte words: an f16 chunk of odd size ends inside the padded buffer.
            size: Some(((rows.end - rows.start).max(1) as u64 * row_bytes).div_ceil(4) * 4),
            label: &self.label,
        }
    }

    /// Overwrite the contents with `data` (staged into the next submit).
    pub fn write<T: Pod>(&self, ctx: &GpuContext, data: &[T]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::Shape {
                tensor: self.label.clone(),
                expected: self.shape.clone(),
                found: vec![data.len()],
            });
        }
        if !data.is_empty() {
            ctx.queue
                .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Copy the tensor to a fresh staging buffer in its own submit and await the data.
    pub async fn read<T: Pod>(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        let rb = Readback::new(ctx, &self.label, self.size_bytes().max(4));
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some(&self.label),
            });
        encoder.copy_buffer_to_buffer(&self.buffer, 0, &rb.buffer, 0, rb.size);
        ctx.submit(encoder.finish());
        let mut v: Vec<T> = rb.read(ctx).await?;
        v.truncate(self.numel());
        Ok(v)
    }

    /// The values as f32; an f16 tensor's are widened exactly.
    pub async fn read_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>> {
        if self.dtype == DType::F16 {
            let words: Vec<u32> = self.read::<u32>(ctx).await?;
            let half: &[half::f16] = bytemuck::cast_slice(&words);
            return Ok(half[..self.numel()].iter().map(|h| h.to_f32()).collect());
        }
        self.read::<f32>(ctx).await
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({} {:?} {})", self.label, self.shape, self.dtype)
    }
}

/// A mappable staging buffer, allocated once, that a schedule copies results into.
pub struct Readback {
    pub buffer: wgpu::Buffer,
    pub size: u64,
    pub label: String,
}

impl Readback {
    pub fn new(ctx: &GpuContext, label: &str, size: u64) -> Self {
        let size = size.div_ceil(4) * 4;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{label} (readback)")),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Readback {
            buffer,
            size,
            label: label.to_string(),
        }
    }

    /// Await the buffer's contents after a submit that copied into it.
    pub async fn read<T: Pod>(&self, ctx: &GpuContext) -> Result<Vec<T>> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.buffer
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        let fail = |message: String| Error::Readback {
            label: self.label.clone(),
            message,
        };
        rx.await
            .map_err(|_| fail("the device dropped the map request".into()))?
            .map_err(|e| fail(e.to_string()))?;
        if let Some(e) = ctx.take_device_error() {
            self.buffer.unmap();
            return Err(Error::Gpu {
                label: self.label.clone(),
                message: format!("the work before this readback failed: {e}"),
            });
        }
        let data = {
            let view = self
                .buffer
                .slice(..)
                .get_mapped_range()
                .map_err(|e| fail(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view)
        };
        self.buffer.unmap();
        Ok(data)
    }
}
