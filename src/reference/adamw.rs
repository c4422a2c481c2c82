//! References for shaders/adamw.wgsl (being written).
