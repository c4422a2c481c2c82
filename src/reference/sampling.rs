//! References for shaders/sampling.wgsl (being written).
