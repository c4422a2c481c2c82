//! References for shaders/dropout.wgsl (being written).
