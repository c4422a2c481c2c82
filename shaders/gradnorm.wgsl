// gradnorm.wgsl: (being written)
