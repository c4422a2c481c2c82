//! Generate with wgformer's library API, headless: load a checkpoint (a wgformer or
//! Hugging Face GPT-2 directory), make a `Generator`, and print each token as the stream
//! yields it. The library never blocks; this program is the edge that does, with
//! `GpuContext::block_on`.
//!
//! ```sh
//! cargo run --release --example generate -- path/to/gpt2 "The meaning of life is" 40
//! cargo run --release --example generate -- ../shared/fixtures/gpt2-tiny 39,29,70,11,29 20
//! ```
//! The second form passes token ids, for models without a tokenizer.

use std::io::Write;
use std::sync::Arc;

use wgformer::gpu::GpuOptions;
use wgformer::infer::{GenerateOptions, Generator, Model};

fn main() -> wgformer::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: generate <model dir> <prompt text | ids 1,2,3> [max tokens]";
    let path = args.next().expect(usage);
    let prompt = args.next().expect(usage);
    let max_tokens: usize = args.next().map_or(32, |s| s.parse().expect(usage));

    let model = pollster::block_on(Model::load(path.as_ref(), &GpuOptions::from_env()?))?;
    let model = Arc::new(model);
    let ids: Vec<u32> = match &model.tokenizer {
        Some(_) => model.encode(&prompt)?,
        None => prompt
            .split(',')
            .map(|s| s.trim().parse().expect(usage))
            .collect(),
    };
    let opts = GenerateOptions {
        max_tokens,
        temperature: 0.8,
        top_p: 0.95,
        seed: 1,
        ..Default::default()
    };
    let mut generator = Generator::new(model.clone())?;
    let mut stream = generator.stream(&ids, &opts)?;
    print!("{prompt}");
    while let Some(token) = model.ctx.block_on(stream.next())? {
        match model.tokenizer {
            Some(_) => print!("{}", token.text),
            None => print!(",{}", token.id),
        }
        std::io::stdout().flush().ok();
    }
    println!();
    let stats = stream.stats();
    eprintln!(
        "{:?}: prefill {:.1} tok/s, decode {:.1} tok/s",
        stream.finish_reason(),
        stats.prefill_tokens_per_sec(),
        stats.decode_tokens_per_sec()
    );
    Ok(())
}
