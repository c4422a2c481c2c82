//! `wgformer bench`: how fast wgformer runs on an adapter, as JSON and markdown tables
//! naming the adapter and date. Native only: it blocks.
//!
//! - [`kernels`]: each kernel at GPT-2 124M shapes, as GFLOP/s or GB/s and as a fraction
//!   of the adapter's pure-FMA ceiling;
//! - [`step`]: a whole training step (ms/step, tokens/s) and where its time goes;
//! - [`generate`]: KV-cached prefill and decode speed (tokens/s);
//! - [`suite`]: all of them in one run, set beside a peer's numbers (benches/peer-burn).
//!
//! Timing uses timestamp queries around each launch where the adapter has them, and
//! wall-clock time around a replay otherwise (each report says which).

use std::time::Instant;

use crate::error::Result;
use crate::gpu::{GpuContext, Profiler, Schedule};

pub mod generate;
pub mod kernels;
pub mod step;
pub mod suite;

pub use generate::{run_generate, GenerateReport};
pub use kernels::{kernel_cases, peak_gflops, run_kernels, BenchShape, Case, Measurement, Report};
pub use step::{run_step, StepReport};
pub use suite::{PeerReport, SuiteReport};

/// Replay `s` until `secs` seconds of wall clock have passed (at least once): a GPU's
/// clocks take a while to leave their idle state, and whatever is timed first would be
/// timed slow.
pub fn warm_up(ctx: &GpuContext, s: &Schedule, secs: f64) {
    let t0 = Instant::now();
    loop {
        s.run(ctx);
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
        if t0.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
}

/// Seconds one replay of `s` takes: the median over `reps` runs after a warm-up.
pub fn time_schedule(ctx: &GpuContext, s: &Schedule, reps: usize) -> Result<f64> {
    Ok(replay_times(ctx, s, reps)?[reps.max(1) / 2])
}

/// Seconds of the fastest of `reps` replays of `s` after a warm-up: for a ceiling, which
/// no replay can beat.
pub fn time_schedule_min(ctx: &GpuContext, s: &Schedule, reps: usize) -> Result<f64> {
    Ok(replay_times(ctx, s, reps)?[0])
}

/// The times of `reps` (at least 1) replays of `s` after a warm-up, sorted: by GPU
/// timestamps where the adapter has them, else by wall clock around a wait.
fn replay_times(ctx: &GpuContext, s: &Schedule, reps: usize) -> Result<Vec<f64>> {
    let reps = reps.max(1);
    let wait = || {
        let _ = ctx.device.poll(wgpu::PollType::wait_indefinitely());
    };
    s.run(ctx);
    wait();
    let mut times = Vec::with_capacity(reps);
    if let Some(profiler) = Profiler::new(ctx, s) {
        for _ in 0..reps {
            s.run_profiled(ctx, &profiler);
            let t = ctx.block_on(profiler.read(ctx))?;
            times.push(t.iter().map(|k| k.nanos).sum::<f64>() * 1e-9);
        }
    } else {
        for _ in 0..reps {
            let t0 = Instant::now();
            s.run(ctx);
            wait();
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}
