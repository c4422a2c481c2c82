//! References for shaders/gradnorm.wgsl (being written).
