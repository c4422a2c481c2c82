//! Launchers for shaders/dropout.wgsl (being written).
