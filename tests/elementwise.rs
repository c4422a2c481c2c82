//! fill, copy and add against their CPU references at awkward sizes.

use wgformer::gpu::{DType, Schedule, Tensor};
use wgformer::kernels::elementwise::{add, copy, fill};
use wgformer::reference::elementwise as cpu;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close64, on_each_adapter, to_f64};

const SIZES: [usize; 6] = [1, 7, 255, 256, 257, 100_003];

#[test]
fn elementwise_matches_reference() {
    on_each_adapter(|ctx| {
        let mut rng = Rng::new(7);
        for n in SIZES {
            let a = rng.vec_uniform(n, -2.0, 2.0);
            let b = rng.vec_normal(n, 3.0);
            let ta = Tensor::from_f32(ctx, "a", &[n], &a).unwrap();
            let tb = Tensor::from_f32(ctx, "b", &[n], &b).unwrap();
            let tf = Tensor::zeros(ctx, "filled", &[n], DType::F32).unwrap();
            let tc = Tensor::zeros(ctx, "copied", &[n], DType::F32).unwrap();
            let ts = Tensor::zeros(ctx, "sum", &[n], DType::F32).unwrap();
            let mut s = Schedule::new("elementwise");
            fill(&mut s, ctx, &tf, -1.25).unwrap();
            copy(&mut s, ctx, &tc, &ta).unwrap();
            add(&mut s, ctx, &ts, &ta, &tb).unwrap();
            s.run(ctx);

            let (a, b) = (to_f64(&a), to_f64(&b));
            let mut want = vec![0f64; n];
            cpu::fill(&mut want, -1.25);
            assert_close64(
                "fill",
                &ctx.block_on(tf.read_f32(ctx)).unwrap(),
                &want,
                0.0,
                0.0,
            );
            cpu::copy(&mut want, &a);
            assert_close64(
                "copy",
                &ctx.block_on(tc.read_f32(ctx)).unwrap(),
                &want,
                0.0,
                0.0,
            );
            cpu::add(&mut want, &a, &b);
            // One f32 addition, correctly rounded: the f64 sum narrowed is the same number.
            assert_close64(
                "add",
                &ctx.block_on(ts.read_f32(ctx)).unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
    });
}
