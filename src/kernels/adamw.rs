//! Launchers for shaders/adamw.wgsl (being written).
