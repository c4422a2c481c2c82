// gelu.wgsl: (being written)
