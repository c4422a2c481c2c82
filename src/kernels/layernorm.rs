//! Launchers for shaders/layernorm.wgsl (being written).
