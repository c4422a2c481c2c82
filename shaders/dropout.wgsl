// dropout.wgsl: (being written)
