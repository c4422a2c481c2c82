//! `wgformer generate`: load a checkpoint, prefill the prompt in one pass, then decode
//! one token per step through the KV cache, sampling on the GPU and streaming each token
//! to stdout as it comes; prefill and decode speeds go to stderr. Prompts are text (with
//! a tokenizer) or token ids (`--prompt-ids`, for models without one).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::infer::{GenerateOptions, Generator, Model};
use crate::model::half::Precision;

/// Flags of `wgformer generate`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Checkpoint: a directory with config.json and model.safetensors (wgformer or
    /// Hugging Face GPT-2), or the .safetensors file itself.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (needs a tokenizer: tokenizer.json beside the model, or GPT-2's
    /// vocabulary).
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Tokens to generate at most; prompt + max-tokens must fit the model's context.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample from the K most likely tokens only; 0 keeps all.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample from the fewest most likely tokens whose probability reaches P; 1 keeps all.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler: the same seed gives the same tokens. Random if not given
    /// (and printed to stderr).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Greedy decoding (the same as --temperature 0).
    #[arg(long)]
    pub greedy: bool,
    /// Print the generated token ids instead of text.
    #[arg(long)]
    pub print_ids: bool,
    /// Stop before this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past the end-of-text token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Precision the matmuls read weights in: f32, or f16 (half the weight bytes per
    /// token; needs an adapter with shader-f16).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(opts: &GpuOptions, args: Args) -> Result<bool> {
    let model = pollster::block_on(Model::load(&args.model, opts))?;
    let model = Arc::new(model.with_precision(args.precision)?);
    let ctx = model.ctx.clone();
    let cfg = model.config();
    eprintln!(
        "model {} ({} layers, {} channels, {} heads, vocabulary {}, context {}) in {} on {}",
        model.name,
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_head,
        cfg.vocab_size,
        cfg.n_positions,
        model.gpt2.precision(),
        ctx.adapter_name()
    );
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => model
            .encode(text)
            .map_err(|e| Error::Invalid(format!("--prompt: {e}; or use --prompt-ids")))?,
        (None, Some(ids)) => {
            model.check_ids(ids, "--prompt-ids")?;
            ids.clone()
        }
        (None, None) => {
            return Err(Error::Invalid(
                "give a prompt: --prompt TEXT, or --prompt-ids 1,2,3 for token ids".into(),
            ))
        }
    };
    let seed = args.seed.unwrap_or_else(time_seed);
    let gen_opts = GenerateOptions {
        max_tokens: args.max_tokens,
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_k: args.top_k,
        top_p: args.top_p,
        seed,
        stop: args.stop.clone(),
        stop_at_eos: !args.ignore_eos,
    };
    let mut gen = Generator::new(model.clone())?;
    let mut stream = gen
        .stream(&prompt, &gen_opts)
        .map_err(|e| match args.prompt {
            Some(_) => Error::Invalid(format!("--prompt / --max-tokens: {e}")),
            None => Error::Invalid(format!("--prompt-ids / --max-tokens: {e}")),
        })?;
    if gen_opts.temperature > 0.0 {
        eprintln!("seed {seed}");
    }
    let ids_out = args.print_ids || model.tokenizer.is_none();
    if ids_out && !args.print_ids {
        eprintln!("(no tokenizer: printing token ids)");
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| Error::Io {
        path: "stdout".into(),
        source: e,
    };
    if !ids_out {
        write!(out, "{}", args.prompt.as_deref().unwrap_or_default()).map_err(io)?;
    }
    let mut first = true;
    while let Some(tok) = ctx.block_on(stream.next())? {
        if ids_out {
            write!(out, "{}{}", if first { "" } else { " " }, tok.id).map_err(io)?;
        } else {
            write!(out, "{}", tok.text).map_err(io)?;
        }
        first = false;
        out.flush().map_err(io)?;
    }
    writeln!(out).map_err(io)?;
    let st = stream.stats();
    eprintln!(
        "prefill: {} tokens in {:.1} ms ({:.1} tok/s); decode: {} tokens in {:.1} ms ({:.2} \
         tok/s, {:.1} ms/token); finish: {}",
        st.prompt_tokens,
        st.prefill_secs * 1e3,
        st.prefill_tokens_per_sec(),
        st.decode_tokens,
        st.decode_secs * 1e3,
        st.decode_tokens_per_sec(),
        st.decode_secs * 1e3 / st.decode_tokens.max(1) as f64,
        stream.finish_reason().map_or("?", |r| r.as_str())
    );
    Ok(true)
}
