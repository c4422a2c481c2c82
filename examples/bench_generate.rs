//! Prefill and decode speed of KV-cached generation, for BENCHMARKS.md: a model with
//! random weights of a named size (`tiny`, `baby`, `gpt2` for GPT-2 124M) or a checkpoint
//! directory, a prompt of random ids, greedy decoding. Prints one markdown row per
//! model, then the time of one decode step at several positions of the context, which
//! must grow only by the attention over the cache, never by recomputing the prefix.
//!
//! ```sh
//! cargo run --release --example bench_generate -- tiny 8 64
//! cargo run --release --example bench_generate -- gpt2 8 8
//! cargo run --release --example bench_generate -- ../shared/fixtures/gpt2-tiny 5 26
//! ```

use std::sync::Arc;
use std::time::Instant;

use wgformer::gpu::{GpuContext, GpuOptions};
use wgformer::infer::model::needs;
use wgformer::infer::{GenerateOptions, Generator, Model};
use wgformer::kernels::sampling::SampleSettings;
use wgformer::model::gpt2::Gpt2;
use wgformer::model::params::num_parameters;
use wgformer::model::Gpt2Config;
use wgformer::rng::Rng;

fn main() -> wgformer::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_generate <tiny|baby|gpt2|model dir> [prompt tokens] [new tokens]";
    let which = args.next().expect(usage);
    let prompt_len: usize = args.next().map_or(8, |s| s.parse().expect(usage));
    let new_tokens: usize = args.next().map_or(32, |s| s.parse().expect(usage));
    let opts = GpuOptions::from_env()?;

    let t0 = Instant::now();
    let model = if std::path::Path::new(&which).exists() {
        pollster::block_on(Model::load(which.as_ref(), &opts))?
    } else {
        let cfg = Gpt2Config::preset(&which, None)?;
        let ctx = Arc::new(pollster::block_on(GpuContext::with_needs(
            &opts,
            &needs(&cfg),
        ))?);
        let gpt2 = Gpt2::init(&ctx, cfg, 1)?;
        Model::from_parts(ctx, gpt2, None, format!("{which} (random init)"))
    };
    let model = Arc::new(model);
    let ctx = model.ctx.clone();
    let cfg = model.config().clone();
    eprintln!(
        "{}: {:.1}M parameters, loaded in {:.1} s, on {}",
        model.name,
        num_parameters(&cfg) as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        ctx.adapter_name()
    );
    let t0 = Instant::now();
    let mut generator = Generator::new(model.clone())?;
    eprintln!(
        "decoder: {:.1} MiB, passes recorded in {:.2} s",
        generator.decoder().bytes() as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    let mut rng = Rng::new(7);
    let prompt: Vec<u32> = (0..prompt_len)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let greedy = GenerateOptions::greedy(new_tokens);
    // Once to compile every pipeline, then timed.
    let warm = GenerateOptions::greedy(2);
    ctx.block_on(generator.generate(&prompt, &warm))?;
    let out = ctx.block_on(generator.generate(&prompt, &greedy))?;
    let st = &out.stats;
    println!(
        "| model | adapter | prompt | prefill tok/s | generated | decode tok/s | ms/decode step |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {:.1} | {} | {:.2} | {:.1} |",
        model.name,
        ctx.info.name,
        st.prompt_tokens,
        st.prefill_tokens_per_sec(),
        out.ids.len(),
        st.decode_tokens_per_sec(),
        1e3 * st.decode_secs / st.decode_tokens.max(1) as f64
    );

    // One decode step at positions across the context (the cache past the prompt holds
    // whatever it holds: only the time matters here).
    let n = cfg.n_positions;
    let dec = generator.decoder();
    let settings = [SampleSettings::greedy()];
    println!();
    println!("| position | ms/decode step |");
    println!("|---:|---:|");
    for pos in [prompt_len, n / 4, n / 2, n - 2] {
        let steps = 3;
        dec.set_position(0, pos)?;
        ctx.block_on(dec.feed(&ctx, &[&[1]], &settings))?;
        let t = Instant::now();
        for _ in 0..steps {
            dec.set_position(0, pos)?;
            ctx.block_on(dec.feed(&ctx, &[&[1]], &settings))?;
        }
        println!(
            "| {pos} | {:.1} |",
            1e3 * t.elapsed().as_secs_f64() / steps as f64
        );
    }
    Ok(())
}
