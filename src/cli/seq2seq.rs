//! The encoder–decoder's commands: `wgformer train --arch seq2seq` (planned and trained
//! by `train::seq2seq`), `wgformer translate` (greedy or beam search through the KV
//! cache, from --text or stdin line by line) and `wgformer make-pairs` (generated toy
//! tasks to train on).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::infer::translate::{translate as decode, TranslateOptions};
use crate::model::seq2seq::Seq2seq;
use crate::train::pairs::decode as detokenize;
use crate::train::progress::ProgressObserver;
use crate::train::seq2seq::Seq2seqPlan;
use crate::train::seq2seq::{
    load_tokenizers, plan_seq2seq, plan_seq2seq_resume, train_seq2seq, Seq2seqModelChoice,
    Seq2seqOptions,
};
use crate::train::state::resolve_model_dir;
use crate::train::tasks::{generate, write_pairs, Task};
use crate::train::tokenize::encode_text;

/// Plan the run `wgformer train --arch seq2seq <flags>` asks for, or its resume (CPU
/// only: reads and tokenizes the pairs, writes run.json).
pub fn plan(args: &crate::cli::train::Args) -> Result<Seq2seqPlan> {
    Ok(if args.resume {
        plan_seq2seq_resume(&args.out_dir(), args.steps)?
    } else {
        let data = args.data.clone().ok_or_else(|| {
            Error::Invalid("--arch seq2seq needs --data: a JSONL file of {\"source\": ..., \"target\": ...} lines".into())
        })?;
        for (flag, given) in [
            ("--preset", args.preset.is_some()),
            ("--block-size", args.block_size.is_some()),
            ("--init-from", args.init_from.is_some()),
        ] {
            if given {
                return Err(Error::Invalid(format!(
                    "{flag} does not apply to --arch seq2seq (lengths come from the pairs)"
                )));
            }
        }
        plan_seq2seq(&Seq2seqOptions {
            data,
            out: args.out_dir(),
            tokenizer: args.tokenizer.parse()?,
            target_tokenizer: args
                .target_tokenizer
                .as_deref()
                .map(str::parse)
                .transpose()?,
            normalize: args.normalize.parse()?,
            val_fraction: args.val_fraction,
            model: Seq2seqModelChoice {
                d_model: args.n_embd,
                heads: args.n_head,
                encoder_layers: args.encoder_layers.or(args.n_layer),
                decoder_layers: args.decoder_layers.or(args.n_layer),
                ffn: args.ffn,
            },
            train: args.settings(),
            overwrite: args.overwrite,
        })?
    })
}

/// `wgformer train --arch seq2seq`: plan (or resume), train, report.
pub fn train(opts: &GpuOptions, args: &crate::cli::train::Args) -> Result<bool> {
    let plan = plan(args)?;
    let ctx = pollster::block_on(GpuContext::with_needs(opts, &plan.needs()))?;
    let mut obs = ProgressObserver::new();
    let out = ctx.block_on(train_seq2seq(&ctx, plan, args.stop_at, &mut obs))?;
    let s = &out.state;
    let val = s.last_val_loss.map_or("-".into(), |v| format!("{v:.4}"));
    println!(
        "trained {} steps in {:.1} min ({} target tokens); validation loss {val}",
        s.step,
        s.elapsed_s / 60.0,
        s.tokens_seen
    );
    let (ok, n) = out.exact_match;
    if n > 0 {
        println!(
            "exact match (greedy) on {n} held-out pairs: {ok}/{n} = {:.1}%",
            100.0 * ok as f64 / n as f64
        );
    }
    let r = &out.run;
    println!(
        "files: {} (latest checkpoint), {} (best), {}, {}",
        r.latest().display(),
        r.best().display(),
        r.metrics().display(),
        r.plot().display()
    );
    Ok(true)
}

/// Flags of `wgformer translate`.
#[derive(clap::Args, Debug, Clone)]
pub struct TranslateArgs {
    /// A seq2seq checkpoint (config.json, model.safetensors, tokenizer.json or
    /// source_/target_tokenizer.json), or a run directory (its best/ model).
    #[arg(long)]
    pub model: PathBuf,
    /// Text to translate (repeatable); without it, each line of stdin is one input.
    #[arg(long)]
    pub text: Vec<String>,
    /// Beams per input; 1 is greedy.
    #[arg(long, default_value_t = 1)]
    pub beam: usize,
    /// α of the length normalisation score / length^α ranking finished beams.
    #[arg(long, default_value_t = 1.0)]
    pub length_penalty: f32,
    /// Most target tokens per input [default: 2 × the source's tokens + 10, within the
    /// model's max_len].
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Inputs decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Print the log-probability of each output after a tab.
    #[arg(long)]
    pub scores: bool,
}

/// `wgformer translate`.
pub fn translate(opts: &GpuOptions, args: TranslateArgs) -> Result<bool> {
    let dir = resolve_model_dir(&args.model)?;
    let (src_tok, tgt_tok) = load_tokenizers(&dir)?;
    let config = crate::model::seq2seq::Seq2seqConfig::from_file(&dir.join("config.json"))?;
    let ctx = pollster::block_on(GpuContext::with_needs(
        opts,
        &Seq2seq::needs(&config, args.batch * args.beam, 1, 1),
    ))?;
    let model = Seq2seq::load(&ctx, &dir)?;
    let cap = model.config.max_len;
    let run = |lines: &[String]| -> Result<()> {
        let ids: Vec<Vec<u32>> = lines
            .iter()
            .map(|l| {
                encode_text(&src_tok, l).map_err(|e| Error::Invalid(format!("input {l:?}: {e}")))
            })
            .collect::<Result<_>>()?;
        for (l, i) in lines.iter().zip(&ids) {
            if i.is_empty() {
                return Err(Error::Invalid(format!("input {l:?} has no tokens")));
            }
        }
        let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
        let max_len = args.max_len.unwrap_or(2 * longest + 10).min(cap);
        let topts = TranslateOptions {
            beam: args.beam,
            max_len,
            length_penalty: args.length_penalty,
            stop_at_eos: true,
        };
        let hyps = ctx.block_on(decode(&ctx, &model, &ids, &topts, args.batch))?;
        let mut out = std::io::stdout().lock();
        for h in hyps {
            let text = detokenize(&tgt_tok, &h.tokens)?;
            let line = if args.scores {
                format!("{text}\t{:.4}", h.log_prob)
            } else {
                text
            };
            writeln!(out, "{line}").map_err(|e| Error::Io {
                path: "stdout".into(),
                source: e,
            })?;
        }
        out.flush().map_err(|e| Error::Io {
            path: "stdout".into(),
            source: e,
        })
    };
    if !args.text.is_empty() {
        run(&args.text)?;
        return Ok(true);
    }
    let stdin = std::io::stdin();
    let mut pending = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::Io {
            path: "stdin".into(),
            source: e,
        })?;
        if line.is_empty() {
            continue;
        }
        pending.push(line);
        if pending.len() == args.batch.max(1) {
            run(&pending)?;
            pending.clear();
        }
    }
    if !pending.is_empty() {
        run(&pending)?;
    }
    Ok(true)
}

/// Flags of `wgformer make-pairs`.
#[derive(clap::Args, Debug, Clone)]
pub struct MakePairsArgs {
    /// reverse, sort or copy: the target is the source's letters reversed, sorted, or as is.
    #[arg(long, default_value = "reverse")]
    pub task: String,
    /// Pairs to write.
    #[arg(long, default_value_t = 5000)]
    pub n: usize,
    /// Shortest source, in letters.
    #[arg(long, default_value_t = 3)]
    pub min_len: usize,
    /// Longest source, in letters.
    #[arg(long, default_value_t = 12)]
    pub max_len: usize,
    /// Letters drawn from: the first N of a–z.
    #[arg(long, default_value_t = 10)]
    pub alphabet: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output JSONL file.
    #[arg(long)]
    pub out: PathBuf,
}

/// `wgformer make-pairs`.
pub fn make_pairs(args: MakePairsArgs) -> Result<bool> {
    let task: Task = args.task.parse()?;
    let pairs = generate(
        task,
        args.n,
        args.min_len,
        args.max_len,
        args.alphabet,
        args.seed,
    )?;
    write_pairs(&args.out, &pairs)?;
    println!(
        "wrote {} {task} pairs to {}",
        pairs.len(),
        args.out.display()
    );
    Ok(true)
}
