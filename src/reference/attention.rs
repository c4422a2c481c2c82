//! References for shaders/attention.wgsl (being written).
