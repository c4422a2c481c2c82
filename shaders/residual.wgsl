// residual.wgsl: (being written)
