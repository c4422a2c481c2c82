// sampling.wgsl: (being written)
