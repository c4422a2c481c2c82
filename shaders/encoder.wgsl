// encoder.wgsl: the input embedding, out[b, t, :] = wte[tokens[b, t], :]·scale + wpe[t, :],
// and its backward, which adds scale·dout into the token rows of dwte and dout into the
// position rows of dwpe. GPT-2 has scale 1 and a learned wpe; torch's Transformer has
// scale √C and a fixed sinusoidal wpe (no dwpe launch). Four entry points:
//   encoder_forward          one invocation per (b, t, c)
//   encoder_backward_links   one invocation per position: first occurrence and next
//                            position of its token, into an i32 scratch tensor
//   encoder_backward_dwte    one invocation per (first-occurrence position, c): walks
//                            that token's positions in order, adding into dwte
//   encoder_backward_dwpe    one invocation per (t, c): adds dout over b in order
// Repeated tokens are therefore summed in position order, the same bits every run,
// with no atomics.
//
// wte / dwte (V, C) may be larger than one storage binding (GPT-2: 50257×768 f32 =
// 147 MiB): the launcher binds them in row chunks and launches forward and dwte once per
// chunk, with the chunk's first row in the params; a position is handled by the launch
// whose chunk holds its token. Tokens outside [0, V) are the host's to reject; here they
// read nothing out of bounds: the forward writes out = wpe[t] for them (in the launch of
// the chunk starting at row 0) and the backward adds them to dwpe only.
// Launchers: src/kernels/encoder.rs. CPU references: src/reference/encoder.rs.

// Mirrored by `EncoderParams` in src/kernels/encoder.rs.
struct EncoderParams {
    b: u32,     // batch B
    t: u32,     // time T (wpe may have more rows: maxT ≥ T)
    c: u32,     // channels C
    v: u32,     // vocabulary V, rows of the whole wte
    row0: u32,  // first wte row of the bound chunk
    rows: u32,  // wte rows in the bound chunk
    scale: f32, // multiplies the token embedding (1 for GPT-2, √C for torch's Transformer)
    _pad: u32,  // to 32 bytes
}

const WG: u32 = 256u;

// Row of `token` within the bound chunk of wte, or -1 if the chunk does not hold it.
fn chunk_row(token: i32, p: EncoderParams) -> i32 {
    let local = token - i32(p.row0);
    if (token >= 0 && token < i32(p.v) && local >= 0 && local < i32(p.rows)) {
        return local;
    }
    return -1;
}

@group(0) @binding(0) var<storage, read_write> fwd_out: array<f32>;  // (B, T, C)
@group(0) @binding(1) var<storage, read> fwd_tokens: array<i32>;     // (B, T)
@group(0) @binding(2) var<storage, read> fwd_wte: array<f32>;        // (rows, C): wte[row0..row0+rows]
@group(0) @binding(3) var<storage, read> fwd_wpe: array<f32>;        // (maxT, C)
@group(0) @binding(4) var<uniform> fwd_p: EncoderParams;

@compute @workgroup_size(WG)
fn encoder_forward(@builtin(workgroup_id) wg: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let p = fwd_p;
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i >= p.b * p.t * p.c) {
        return;
    }
    let bt = i / p.c;
    let ch = i % p.c;
    let pos = fwd_wpe[(bt % p.t) * p.c + ch];
    let token = fwd_tokens[bt];
    let row = chunk_row(token, p);
    if (row >= 0) {
        fwd_out[i] = fwd_wte[u32(row) * p.c + ch] * p.scale + pos;
    } else if ((token < 0 || token >= i32(p.v)) && p.row0 == 0u) {
        fwd_out[i] = pos;  // out of range: no token embedding
    }
}

@group(0) @binding(0) var<storage, read_write> lnk_links: array<i32>;  // (B·T, 2): (next, first)
@group(0) @binding(1) var<storage, read> lnk_tokens: array<i32>;       // (B, T)
@group(0) @binding(2) var<uniform> lnk_p: EncoderParams;

var<workgroup> token_tile: array<i32, WG>;

// For position i (of B·T, row-major): links[i] = (the next position holding the same
// token, or -1; 1 if no earlier position holds it, else 0). Every invocation compares
// its token with all B·T, staged WG at a time through workgroup memory: O((B·T)²)
// integer compares, cheap beside the step's matmuls.
@compute @workgroup_size(WG)
fn encoder_backward_links(@builtin(workgroup_id) wg: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let n = lnk_p.b * lnk_p.t;
    let i = linear_workgroup(wg, nwg) * WG + li;
    var mine = 0;
    if (i < n) {
        mine = lnk_tokens[i];
    }
    var first = 1;
    var next = -1;
    for (var j0 = 0u; j0 < n; j0 += WG) {
        if (j0 + li < n) {
            token_tile[li] = lnk_tokens[j0 + li];
        }
        workgroupBarrier();
        let len = min(WG, n - j0);
        for (var k = 0u; k < len; k++) {
            let j = j0 + k;
            if (token_tile[k] == mine) {
                if (j < i) {
                    first = 0;
                } else if (j > i && next < 0) {
                    next = i32(j);
                }
            }
        }
        workgroupBarrier();
    }
    if (i < n) {
        lnk_links[2u * i] = next;
        lnk_links[2u * i + 1u] = first;
    }
}

@group(0) @binding(0) var<storage, read_write> dte_dwte: array<f32>;  // (rows, C): dwte[row0..row0+rows]
@group(0) @binding(1) var<storage, read> dte_dout: array<f32>;        // (B, T, C)
@group(0) @binding(2) var<storage, read> dte_tokens: array<i32>;      // (B, T)
@group(0) @binding(3) var<storage, read> dte_links: array<i32>;       // (B·T, 2): (next, first)
@group(0) @binding(4) var<uniform> dte_p: EncoderParams;

// dwte[token, c] += scale·Σ dout[i, c] over the positions i holding token, in position
// order. The invocation of the token's first position owns the element; the others
// return. Added into, like every gradient; the training step zeroes them once per step.
// At scale 1 (GPT-2) each dout is added straight into the old value, as the kernel did
// before it had a scale, so GPT-2's gradients keep their bits; otherwise Σ starts from 0
// and the finished sum is scaled once: old + scale·Σ.
@compute @workgroup_size(WG)
fn encoder_backward_dwte(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let p = dte_p;
    let i = linear_workgroup(wg, nwg) * WG + li;
    if (i >= p.b * p.t * p.c) {
        return;
    }
    let bt = i / p.c;
    let ch = i % p.c;
    let row = chunk_row(dte_tokens[bt], p);
    if (row < 0 || dte_links[2u * bt + 1u] == 0) {
        return;
    }
    let at = u32(row) * p.c + ch;
    let old = dte_dwte[at];
    let unit = p.scale == 1.0;
    var acc = select(0.0, old, unit);
    var q = i32(bt);
    while (q >= 0) {
        acc += dte_dout[u32(q) * p.c + ch];
        q = dte_links[2u * u32(q)];
    }
    dte_dwte[at] = select(old + p.scale * acc, acc, unit);
}

@group(0) @binding(0) var<storage, read_write> dpe_dwpe: array<f32>;  // (maxT, C)
@group(0) @binding(1) var<storage, read> dpe_dout: array<f32>;        // (B, T, C)
@group(0) @binding(2) var<uniform> dpe_p: EncoderParams;

// dwpe[t, c] += Σ_b dout[b, t, c], b in order (not scaled). Added into, like every
// gradient.
@compute @workgroup_size(WG)
fn encoder_backward_dwpe(@builtin(workgroup_id) wg: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) li: u32) {
    let p = dpe_p;
    let i = linear_workgroup(wg, nwg) * WG + li;  // t·C + c
    if (i >= p.t * p.c) {
        return;
    }
    var acc = dpe_dwpe[i];
    for (var b = 0u; b < p.b; b++) {
        acc += dpe_dout[b * p.t * p.c + i];
    }
    dpe_dwpe[i] = acc;
}
