//! `wgformer eval`: perplexity and mean loss of a model over a text file, with a
//! progress bar on stderr. The file is tokenized with the model's tokenizer and cut into
//! windows of the model's context (or `--context`), every `--stride` tokens; each token
//! is scored once (see `infer::eval`).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::infer::eval::Evaluator;
use crate::infer::model::checkpoint_config;
use crate::infer::Model;
use crate::model::gpt2::Gpt2;

/// Flags of `wgformer eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Checkpoint: a directory with config.json and model.safetensors, or the
    /// .safetensors file itself.
    #[arg(long)]
    pub model: PathBuf,
    /// Text file to score (UTF-8).
    #[arg(long)]
    pub data: PathBuf,
    /// Positions per window; the model's context by default.
    #[arg(long)]
    pub context: Option<usize>,
    /// Tokens between window starts; the window length by default (no overlap). Smaller
    /// strides give each token more context and cost more windows.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Windows per submit.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Score only the first N tokens of the file.
    #[arg(long)]
    pub max_tokens: Option<usize>,
}

pub fn run(opts: &GpuOptions, args: Args) -> Result<bool> {
    let cfg = checkpoint_config(&args.model)?;
    let t = args.context.unwrap_or(cfg.n_positions);
    if t == 0 || t > cfg.n_positions {
        return Err(Error::Invalid(format!(
            "--context {t}: expected 1..={} (the model's context)",
            cfg.n_positions
        )));
    }
    if args.batch == 0 {
        return Err(Error::Invalid("--batch must be at least 1".into()));
    }
    let stride = args.stride.unwrap_or(t);
    let needs = Gpt2::needs(&cfg, args.batch, t);
    let model = pollster::block_on(Model::load_with_needs(&args.model, opts, &needs))?;
    let ctx = model.ctx.clone();
    let text = std::fs::read_to_string(&args.data).map_err(|e| Error::Io {
        path: format!("--data {}", args.data.display()),
        source: e,
    })?;
    let encode = |t: &str| {
        model
            .encode(t)
            .map_err(|e| Error::Invalid(format!("--data {}: {e}", args.data.display())))
    };
    let tokens = match args.max_tokens {
        None => encode(&text)?,
        Some(n) => {
            // Tokenize a growing prefix, cut where a line starts with a non-space (the
            // tokenizers here never merge across that), until it holds n tokens.
            let mut len = n.saturating_mul(8).max(1024);
            loop {
                let cut = prefix_end(&text, len);
                let mut t = encode(&text[..cut])?;
                if t.len() >= n || cut == text.len() {
                    t.truncate(n);
                    break t;
                }
                len = len.saturating_mul(2);
            }
        }
    };
    eprintln!(
        "eval of {} on {}: {} tokens of {}, windows of {t} every {stride}, batch {}",
        model.name,
        ctx.adapter_name(),
        tokens.len(),
        args.data.display(),
        args.batch
    );
    let eval = Evaluator::new(&ctx, &model.gpt2, args.batch, t)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} windows [{elapsed_precise} < {eta_precise}] {per_sec}",
        )
        .expect("a valid template"),
    );
    let start = std::time::Instant::now();
    let report = ctx
        .block_on(eval.evaluate(&ctx, &tokens, stride, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }))
        .map_err(|e| Error::Invalid(format!("--data {}: {e}", args.data.display())))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!("tokens scored: {}", report.tokens);
    println!(
        "windows: {} of {t} positions, stride {stride}",
        report.windows
    );
    println!("mean loss: {:.4} nats/token", report.mean_loss);
    println!("perplexity: {:.3}", report.perplexity);
    eprintln!(
        "{:.1} s, {:.2} windows/s, {:.1} positions/s",
        secs,
        report.windows as f64 / secs,
        (report.windows * t) as f64 / secs
    );
    Ok(true)
}

/// The end of a prefix of `text` of about `len` bytes: just after a newline that a
/// non-whitespace character follows, or the whole text.
fn prefix_end(text: &str, len: usize) -> usize {
    if len >= text.len() {
        return text.len();
    }
    let bytes = text.as_bytes();
    (len..bytes.len())
        .find(|&i| {
            bytes[i - 1] == b'\n' && !bytes[i].is_ascii_whitespace() && text.is_char_boundary(i)
        })
        .unwrap_or(text.len())
}
