//! References for shaders/encoder.wgsl (being written).
