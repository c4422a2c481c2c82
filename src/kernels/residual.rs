//! Launchers for shaders/residual.wgsl (being written).
