//! Write a randomly initialised GPT-2 of a named size as a checkpoint directory
//! (`config.json` + `model.safetensors`, Hugging Face's layout), for trying `wgformer
//! generate`, `eval` and `serve` without downloading weights. Sizes with GPT-2's
//! vocabulary (`gpt2`, `gpt2-medium`) get GPT-2's BPE tokenizer when loaded; `--vocab`
//! gives a small size GPT-2's vocabulary too.
//!
//! ```sh
//! cargo run --release --example random_checkpoint -- gpt2 /tmp/gpt2-random
//! cargo run --release --example random_checkpoint -- tiny /tmp/tiny-bpe 50257
//! ```

use wgformer::gpu::{GpuContext, GpuOptions};
use wgformer::infer::model::needs;
use wgformer::model::gpt2::Gpt2;
use wgformer::model::Gpt2Config;

fn main() -> wgformer::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: random_checkpoint <preset> <out dir> [vocab size]";
    let preset = args.next().expect(usage);
    let dir = std::path::PathBuf::from(args.next().expect(usage));
    let vocab: Option<usize> = args.next().map(|s| s.parse().expect(usage));
    let cfg = Gpt2Config::preset(&preset, vocab)?;
    let ctx = pollster::block_on(GpuContext::with_needs(
        &GpuOptions::from_env()?,
        &needs(&cfg),
    ))?;
    let model = Gpt2::init(&ctx, cfg, 1)?;
    ctx.block_on(model.save(&ctx, &dir))?;
    eprintln!("wrote {} ({preset}, random init)", dir.display());
    Ok(())
}
