//! References for shaders/crossentropy.wgsl (being written).
