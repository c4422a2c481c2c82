//! The GPU runtime: context (adapter, device, queue), tensors, pipelines, the scheduler
//! and buffer planning. Kernels live in `crate::kernels`; this module knows nothing of
//! any particular op.

pub mod context;
pub mod pipeline;
pub mod plan;
pub mod schedule;
pub mod tensor;

pub use context::{
    binding_chunks, list_adapters, select_adapter, AdapterReport, BackendChoice, GpuContext,
    GpuOptions, MatmulKernel, Needs,
};
pub use pipeline::{Binding, KernelDesc, Shader, ShaderChecks};
pub use plan::{BufferPlanner, TensorSet, TensorSpec};
pub use schedule::{KernelTime, Profiler, Schedule, Slot};
pub use tensor::{DType, Readback, Tensor};

/// Run `f` inside a validation error scope and return its error, if any. wgpu-core
/// settles scopes synchronously, so on native this sees every validation error at once.
/// A browser settles them only later, so there no scope is pushed: the error reaches the
/// device's uncaptured-error handler, which [`GpuContext`] installs, and the next readback
/// fails with it (see [`GpuContext::take_device_error`]).
pub(crate) fn validated<T>(
    device: &wgpu::Device,
    f: impl FnOnce() -> T,
) -> (T, Option<wgpu::Error>) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        (value, poll_now(scope.pop()))
    }
    #[cfg(target_arch = "wasm32")]
    {
        let _ = device;
        (f(), None)
    }
}

/// Poll a future once; `None` if it is not ready.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn poll_now<F: std::future::Future<Output = Option<wgpu::Error>>>(
    fut: F,
) -> Option<wgpu::Error> {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(e) => e,
        std::task::Poll::Pending => None,
    }
}
