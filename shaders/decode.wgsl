// decode.wgsl: (being written)
