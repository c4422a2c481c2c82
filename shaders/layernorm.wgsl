// layernorm.wgsl: (being written)
