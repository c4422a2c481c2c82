//! The main job's kernel check passes on every adapter.

use wgformer::selfcheck::selfcheck;
use wgformer::testing::on_each_adapter;

#[test]
fn selfcheck_passes() {
    on_each_adapter(|ctx| {
        let checks = ctx.block_on(selfcheck(ctx)).unwrap();
        assert!(checks.len() >= 13);
        for c in &checks {
            if let Err(msg) = &c.outcome {
                panic!("{} on {}: {msg}", c.kernel, ctx.adapter_name());
            }
        }
    });
}
