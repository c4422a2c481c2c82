//! References for shaders/residual.wgsl (being written).
