//! References for shaders/layernorm.wgsl (being written).
