//! Launchers for shaders/decode.wgsl (being written).
