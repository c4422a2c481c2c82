//! The main job's kernel check passes on every adapter, and gives the same results with
//! our shaders compiled in each `ShaderChecks` mode (trusted, the default; all of wgpu's
//! runtime checks; none).

use wgformer::gpu::{GpuContext, ShaderChecks};
use wgformer::selfcheck::{selfcheck, Check};
use wgformer::testing::{on_each_adapter, reopen};

fn passing_checks(ctx: &GpuContext) -> Vec<Check> {
    let checks = ctx.block_on(selfcheck(ctx)).unwrap();
    assert!(checks.len() >= 13);
    for c in &checks {
        if let Err(msg) = &c.outcome {
            panic!(
                "{} on {} (shader checks: {}): {msg}",
                c.kernel,
                ctx.adapter_name(),
                ctx.shader_checks().name()
            );
        }
    }
    checks
}

#[test]
fn selfcheck_passes() {
    on_each_adapter(|ctx| {
        passing_checks(ctx);
    });
}

/// The forced loop bound only guards against loops that never end, and the bounds checks
/// against indices out of bounds; our loops all end and our indices stay in bounds, so
/// no mode may change a result. Selfcheck's inputs are seeded: every kernel's largest
/// error against the CPU reference must come out the same in every mode.
#[test]
fn every_shader_checks_mode_gives_the_same_results() {
    on_each_adapter(|ctx| {
        let trusted = passing_checks(&reopen(ctx).with_shader_checks(ShaderChecks::Trusted));
        for mode in [ShaderChecks::All, ShaderChecks::Unchecked] {
            let other = reopen(ctx).with_shader_checks(mode);
            assert_eq!(other.shader_checks(), mode);
            let other = passing_checks(&other);
            assert_eq!(trusted.len(), other.len());
            for (a, b) in trusted.iter().zip(&other) {
                assert_eq!(a.kernel, b.kernel);
                assert_eq!(
                    a.outcome,
                    b.outcome,
                    "{} on {}: max |Δ| trusted vs {}",
                    a.kernel,
                    ctx.adapter_name(),
                    mode.name()
                );
            }
        }
    });
}
