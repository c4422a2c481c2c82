//! Launchers for shaders/attention.wgsl (being written).
