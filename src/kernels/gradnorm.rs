//! Launchers for shaders/gradnorm.wgsl (being written).
