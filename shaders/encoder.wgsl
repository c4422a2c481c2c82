// encoder.wgsl: (being written)
