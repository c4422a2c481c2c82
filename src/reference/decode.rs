//! References for shaders/decode.wgsl (being written).
