//! The runtime's promises: one submit per schedule replay, pipelines compiled once,
//! wide launches folded, buffers planned once per key, profiling, and errors that name
//! what is wrong.

use wgformer::gpu::schedule::fold_workgroups;
use wgformer::gpu::{
    BackendChoice, BufferPlanner, DType, GpuContext, GpuOptions, Profiler, Schedule, Tensor,
    TensorSpec,
};
use wgformer::kernels::elementwise::{add, fill};
use wgformer::testing::on_each_adapter;
use wgformer::Error;

#[test]
fn schedule_of_1000_kernels_replays_with_one_submit() {
    on_each_adapter(|ctx| {
        let n = 33;
        let ones = Tensor::from_f32(ctx, "ones", &[n], &vec![1.0; n]).unwrap();
        let x = Tensor::zeros(ctx, "x", &[n], DType::F32).unwrap();
        let y = Tensor::zeros(ctx, "y", &[n], DType::F32).unwrap();
        // y = x + 1, x = y + 1, ... : each launch depends on the one before it.
        let mut s = Schedule::new("chain");
        for i in 0..1000 {
            let (out, inp) = if i % 2 == 0 { (&y, &x) } else { (&x, &y) };
            add(&mut s, ctx, out, inp, &ones).unwrap();
        }
        assert_eq!(s.launches(), 1000);
        let pipelines = ctx.pipelines_compiled();
        let before = ctx.submit_count();
        s.run(ctx);
        assert_eq!(
            ctx.submit_count() - before,
            1,
            "one replay must be one submit"
        );
        assert_eq!(ctx.block_on(x.read_f32(ctx)).unwrap(), vec![1000.0; n]);
        // Replaying again adds exactly one more submit and continues the chain.
        let before = ctx.submit_count();
        s.run(ctx);
        assert_eq!(ctx.submit_count() - before, 1);
        assert_eq!(ctx.block_on(x.read_f32(ctx)).unwrap(), vec![2000.0; n]);
        assert_eq!(
            ctx.pipelines_compiled(),
            pipelines,
            "replay compiled a pipeline"
        );
    });
}

#[test]
fn each_pipeline_key_is_compiled_once() {
    on_each_adapter(|ctx| {
        let t = Tensor::zeros(ctx, "t", &[10], DType::F32).unwrap();
        let before = ctx.pipelines_compiled();
        let mut s = Schedule::new("fills");
        for i in 0..50 {
            fill(&mut s, ctx, &t, i as f32).unwrap();
        }
        assert_eq!(ctx.pipelines_compiled(), before + 1);
        s.run(ctx);
        assert_eq!(ctx.block_on(t.read_f32(ctx)).unwrap(), vec![49.0; 10]);
    });
}

#[test]
fn wide_launches_fold_into_two_dimensions() {
    assert_eq!(fold_workgroups([10, 1, 1], 65535), [10, 1, 1]);
    let [x, y, z] = fold_workgroups([65536, 1, 1], 65535);
    assert!(x <= 65535 && y <= 65535 && z == 1 && x * y >= 65536);
    let [x, y, _] = fold_workgroups([200_000, 1, 1], 65535);
    assert!(x <= 65535 && (x as u64 * y as u64) >= 200_000);
    on_each_adapter(|ctx| {
        // 65,535 workgroups of 256 is the widest 1-D launch; go past it.
        let n = 65_535 * 256 + 1000;
        let t = Tensor::zeros(ctx, "wide", &[n], DType::F32).unwrap();
        let mut s = Schedule::new("wide");
        fill(&mut s, ctx, &t, 3.0).unwrap();
        s.run(ctx);
        let v = ctx.block_on(t.read_f32(ctx)).unwrap();
        let bad = v.iter().position(|&x| x != 3.0);
        assert_eq!(bad, None, "element not filled by the folded launch");
    });
}

#[test]
fn buffers_are_planned_once_per_key() {
    on_each_adapter(|ctx| {
        let mut planner = BufferPlanner::default();
        let specs = |bt: usize| {
            move || {
                vec![
                    TensorSpec::f32("ln1", &[bt, 48]),
                    TensorSpec::f32("qkv", &[bt, 144]),
                ]
            }
        };
        let a = planner.get_or_allocate(ctx, (2, 17), specs(34)).unwrap();
        let b = planner.get_or_allocate(ctx, (2, 17), specs(34)).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        assert_eq!(planner.allocations(), 1);
        assert_eq!(a.get("qkv").shape, vec![34, 144]);
        assert_eq!(a.total_bytes(), (34 * 48 + 34 * 144) * 4);
        assert_eq!(a.largest().unwrap().0, "qkv");
        let c = planner.get_or_allocate(ctx, (1, 5), specs(5)).unwrap();
        assert_eq!(planner.allocations(), 2);
        assert_eq!(c.get("ln1").shape, vec![5, 48]);
    });
}

#[test]
fn profiled_replay_times_every_launch() {
    let opts = GpuOptions {
        profile: true,
        ..GpuOptions::from_env().unwrap()
    };
    let ctx = pollster::block_on(GpuContext::new(&opts)).unwrap();
    let t = Tensor::zeros(&ctx, "t", &[1 << 16], DType::F32).unwrap();
    let mut s = Schedule::new("profiled");
    fill(&mut s, &ctx, &t, 1.0).unwrap();
    fill(&mut s, &ctx, &t, 2.0).unwrap();
    let Some(profiler) = Profiler::new(&ctx, &s) else {
        // Documented behaviour: no timestamps, no profile. Say so loudly.
        eprintln!("adapter {} has no timestamp queries", ctx.adapter_name());
        return;
    };
    let before = ctx.submit_count();
    s.run_profiled(&ctx, &profiler);
    assert_eq!(ctx.submit_count() - before, 1);
    let times = ctx.block_on(profiler.read(&ctx)).unwrap();
    assert_eq!(times.len(), 2);
    assert!(times[0].label.contains("fill t"));
    assert!(times.iter().all(|t| t.nanos.is_finite() && t.nanos >= 0.0));
    assert_eq!(ctx.block_on(t.read_f32(&ctx)).unwrap()[0], 2.0);
}

#[test]
fn integer_tensors_round_trip() {
    on_each_adapter(|ctx| {
        let u: Vec<u32> = (0..100).map(|i| i * 7919).collect();
        let i: Vec<i32> = (0..100).map(|i| -50 + i).collect();
        let tu = Tensor::from_u32(ctx, "u", &[10, 10], &u).unwrap();
        let ti = Tensor::from_i32(ctx, "i", &[100], &i).unwrap();
        assert_eq!(ctx.block_on(tu.read::<u32>(ctx)).unwrap(), u);
        assert_eq!(ctx.block_on(ti.read::<i32>(ctx)).unwrap(), i);
    });
}

#[test]
fn user_errors_name_what_is_wrong() {
    on_each_adapter(|ctx| {
        let err = Tensor::from_f32(ctx, "wte", &[3, 4], &[0.0; 11]).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }));
        assert!(err.to_string().contains("wte"), "{err}");

        let a = Tensor::zeros(ctx, "a", &[8], DType::F32).unwrap();
        let c = Tensor::zeros(ctx, "c", &[8], DType::F32).unwrap();
        let bias9 = Tensor::zeros(ctx, "bias9", &[9], DType::F32).unwrap();
        let mut s = Schedule::new("bad");
        let err = add(&mut s, ctx, &a, &c, &bias9).unwrap_err();
        assert!(err.to_string().contains("bias9"), "{err}");
    });
    let err = "cuda".parse::<BackendChoice>().unwrap_err();
    assert!(err.to_string().contains("vulkan"), "{err}");

    let opts = GpuOptions {
        adapter: Some("no-such-adapter-anywhere".into()),
        ..Default::default()
    };
    let err = pollster::block_on(GpuContext::new(&opts)).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("no-such-adapter-anywhere"), "{msg}");
    assert!(msg.contains("mesa-vulkan-drivers"), "{msg}");
}

#[test]
fn row_chunks_fit_the_binding_limit_and_alignment() {
    use wgformer::gpu::context::binding_chunks;
    // 50257 rows of 768 f32 (GPT-2's wte, 147 MiB) under a 128 MiB limit.
    let chunks = binding_chunks(50257, 768 * 4, 128 << 20, 256);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].start, 0);
    assert_eq!(chunks.last().unwrap().end, 50257);
    for c in &chunks {
        assert!((c.end - c.start) as u64 * 768 * 4 <= 128 << 20);
        assert_eq!(c.start as u64 * 768 * 4 % 256, 0);
    }
    // 48-float rows are 192 bytes: chunks start at multiples of 4 rows.
    let chunks = binding_chunks(101, 48 * 4, 2000, 256);
    assert!(chunks
        .iter()
        .all(|c| c.start % 4 == 0 && (c.end - c.start) * 192 <= 2000));
    assert_eq!(chunks.iter().map(|c| c.end - c.start).sum::<usize>(), 101);

    on_each_adapter(|ctx| {
        let rows = 37;
        let data: Vec<f32> = (0..rows * 48).map(|i| i as f32).collect();
        let t = Tensor::from_f32(ctx, "rows", &[rows, 48], &data).unwrap();
        let out = Tensor::zeros(ctx, "out", &[rows, 48], DType::F32).unwrap();
        let chunks = binding_chunks(rows, 48 * 4, 1024, 256);
        assert!(chunks.len() > 1);
        let mut s = Schedule::new("chunked copy");
        for c in chunks {
            let n = (c.end - c.start) * 48;
            let p = CopyParams {
                n: n as u32,
                value: 0.0,
            };
            s.dispatch(
                ctx,
                &wgformer::kernels::elementwise::COPY,
                &[],
                "chunk",
                &[out.rows_slot(c.clone(), 48), t.rows_slot(c, 48)],
                Some(&p),
                [(n as u32).div_ceil(256), 1, 1],
            )
            .unwrap();
        }
        s.run(ctx);
        assert_eq!(ctx.block_on(out.read_f32(ctx)).unwrap(), data);
    });
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n: u32,
    value: f32,
}

#[test]
fn clear_zeroes_inside_the_same_submit() {
    on_each_adapter(|ctx| {
        let t = Tensor::from_f32(ctx, "grad", &[300], &vec![7.0; 300]).unwrap();
        let out = Tensor::zeros(ctx, "out", &[300], DType::F32).unwrap();
        let ones = Tensor::from_f32(ctx, "ones", &[300], &vec![1.0; 300]).unwrap();
        let mut s = Schedule::new("clear then add");
        s.clear(&t);
        add(&mut s, ctx, &out, &t, &ones).unwrap();
        let before = ctx.submit_count();
        s.run(ctx);
        assert_eq!(ctx.submit_count() - before, 1);
        assert_eq!(ctx.block_on(out.read_f32(ctx)).unwrap(), vec![1.0; 300]);
    });
}

/// A GPU error no error scope catches (in a browser, every validation error) is not lost:
/// the next readback fails with it, and the one after works again.
#[test]
fn uncaught_gpu_errors_fail_the_next_readback() {
    on_each_adapter(|ctx| {
        let a = Tensor::from_f32(ctx, "a", &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::zeros(ctx, "b", &[4], DType::F32).unwrap();
        // A copy past the end of b: invalid, and outside any error scope.
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&a.buffer, 0, &b.buffer, 8, 16);
        ctx.submit(enc.finish());
        let err = ctx.block_on(a.read_f32(ctx)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("the work before this readback failed"),
            "{}: {msg}",
            ctx.adapter_name()
        );
        assert_eq!(ctx.block_on(a.read_f32(ctx)).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    });
}
