//! Launchers for shaders/encoder.wgsl (being written).
