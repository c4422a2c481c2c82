//! References for shaders/elementwise.wgsl.

pub fn fill(out: &mut [f64], value: f64) {
    out.iter_mut().for_each(|o| *o = value);
}

pub fn copy(out: &mut [f64], inp: &[f64]) {
    out.copy_from_slice(inp);
}

pub fn add(out: &mut [f64], a: &[f64], b: &[f64]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}
