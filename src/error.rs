//! The crate's error type: every failure a user can cause (no adapter, a bad flag,
//! a shader that does not compile on this adapter, a tensor of the wrong shape) is a
//! variant here with a message that says what and where. Bugs in our own code panic
//! with the op's label instead; they are not represented here.

use thiserror::Error;

/// How to get a GPU adapter on a machine that has none; shown with every "no adapter" error.
pub const NO_ADAPTER_HINT: &str = "\
wgformer needs a GPU adapter (Vulkan, Metal, DX12 or GL). On Linux without a GPU, install a \
software one: Mesa's lavapipe (`apt-get install -y mesa-vulkan-drivers`, Vulkan) or llvmpipe \
through EGL (`apt-get install -y libegl-mesa0 libgl1-mesa-dri`, GL). `wgformer info` lists what \
is found; WGFORMER_BACKEND / WGFORMER_ADAPTER narrow the choice.";

#[derive(Debug, Error)]
pub enum Error {
    #[error("no GPU adapter found{filter}.\n{hint}")]
    NoAdapter { filter: String, hint: &'static str },

    #[error("unknown backend {0:?}: expected one of vulkan, metal, dx12, gl, webgpu, any")]
    UnknownBackend(String),

    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    #[error("adapter {adapter:?} cannot run this workload: {message}")]
    Limits { adapter: String, message: String },

    #[error("shader {shader} (entry {entry}) failed to build: {message}")]
    Shader {
        shader: String,
        entry: String,
        message: String,
    },

    #[error("GPU error in {label}: {message}")]
    Gpu { label: String, message: String },

    #[error("tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    Shape {
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("tensor {tensor}: expected dtype {expected}, found {found}")]
    DType {
        tensor: String,
        expected: String,
        found: String,
    },

    #[error("tensor {tensor}: {bytes} bytes exceed the adapter's {limit}-byte {what}")]
    TooLarge {
        tensor: String,
        bytes: u64,
        limit: u64,
        what: &'static str,
    },

    #[error("reading back {label} failed: {message}")]
    Readback { label: String, message: String },

    #[error("{0}")]
    Invalid(String),

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
