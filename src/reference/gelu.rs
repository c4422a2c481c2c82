//! References for shaders/gelu.wgsl (being written).
