//! Launchers for shaders/gelu.wgsl (being written).
