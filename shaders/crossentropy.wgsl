// crossentropy.wgsl: (being written)
