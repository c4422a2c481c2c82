//! References for shaders/elementwise.wgsl.

pub fn fill(out: &mut [f32], value: f32) {
    out.iter_mut().for_each(|o| *o = value);
}

pub fn copy(out: &mut [f32], inp: &[f32]) {
    out.copy_from_slice(inp);
}

pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}
