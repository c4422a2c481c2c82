//! Launchers for shaders/crossentropy.wgsl (being written).
