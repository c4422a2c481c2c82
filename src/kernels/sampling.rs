//! Launchers for shaders/sampling.wgsl (being written).
