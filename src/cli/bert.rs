//! BERT's commands: `wgformer embed` (sentence embeddings, e.g. with all-MiniLM-L6-v2,
//! from --text or stdin line by line, as JSON or one vector per line), `wgformer train
//! --arch bert --objective mlm` and `wgformer finetune --arch bert --task classify`
//! (planned and trained by `train::bert`).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuOptions};
use crate::infer::embed::{embed_texts, embedding_tokenizer, max_seq_length};
use crate::model::bert::{Bert, BertConfig};
use crate::train::bert::{
    plan_bert, plan_bert_resume, train_bert, BertOptions, BertPlan, Objective,
};
use crate::train::progress::ProgressObserver;

/// Flags of `wgformer embed`.
#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    /// A BERT directory: config.json, model.safetensors, tokenizer.json (and
    /// sentence_bert_config.json for the maximum length), e.g. all-MiniLM-L6-v2 as
    /// scripts/fetch-minilm unpacks it.
    #[arg(long)]
    pub model: PathBuf,
    /// Text to embed (repeatable); without it, each line of stdin is one input (empty
    /// lines included).
    #[arg(long)]
    pub text: Vec<String>,
    /// Output: json (one object with every text and vector) or lines (one vector per
    /// line, space-separated).
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Inputs run together (padded to the longest of them).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
}

pub fn embed(opts: &GpuOptions, args: EmbedArgs) -> Result<bool> {
    if !matches!(args.format.as_str(), "json" | "lines") {
        return Err(Error::Invalid(format!(
            "--format {:?}: expected json or lines",
            args.format
        )));
    }
    let config = BertConfig::from_file(&args.model.join("config.json"))?;
    let max_len = max_seq_length(&args.model, config.max_position_embeddings);
    let tok = embedding_tokenizer(&args.model, max_len)?;
    let texts: Vec<String> = if args.text.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::Io {
                path: "stdin".into(),
                source: e,
            })?
    } else {
        args.text.clone()
    };
    let ctx = pollster::block_on(GpuContext::with_needs(
        opts,
        &Bert::needs(&config, args.batch, max_len),
    ))?;
    let model = Bert::load(&ctx, &args.model)?;
    let vectors = ctx.block_on(embed_texts(&ctx, &model, &tok, &texts, args.batch))?;
    let mut out = std::io::stdout().lock();
    let io = |e| Error::Io {
        path: "stdout".into(),
        source: e,
    };
    if args.format == "json" {
        let items: Vec<serde_json::Value> = texts
            .iter()
            .zip(&vectors)
            .map(|(t, v)| serde_json::json!({"text": t, "embedding": v}))
            .collect();
        let doc = serde_json::json!({"model": args.model.display().to_string(), "dim": config.hidden_size, "embeddings": items});
        writeln!(out, "{doc}").map_err(io)?;
    } else {
        for v in &vectors {
            let line: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
            writeln!(out, "{}", line.join(" ")).map_err(io)?;
        }
    }
    Ok(true)
}

/// Plan `wgformer train --arch bert <flags>` (or its resume).
pub fn plan_pretraining(args: &crate::cli::train::Args) -> Result<BertPlan> {
    if args.resume {
        return plan_bert_resume(&args.out_dir(), args.steps);
    }
    match args.objective.as_deref() {
        None | Some("mlm") => {}
        Some(o) => return Err(Error::Invalid(format!("--objective {o:?}: expected mlm"))),
    }
    for (flag, given) in [
        ("--preset", args.preset.is_some()),
        ("--encoder-layers", args.encoder_layers.is_some()),
        ("--decoder-layers", args.decoder_layers.is_some()),
        ("--ffn", args.ffn.is_some()),
        ("--target-tokenizer", args.target_tokenizer.is_some()),
    ] {
        if given {
            return Err(Error::Invalid(format!(
                "{flag} does not apply to --arch bert"
            )));
        }
    }
    let data = args.data.clone().ok_or_else(|| {
        Error::Invalid(
            "--arch bert needs --data: the text to pretrain on (a file or a directory)".into(),
        )
    })?;
    let tokenizer = (args.tokenizer != "char").then(|| args.tokenizer.clone());
    plan_bert(&BertOptions {
        objective: Objective::Mlm,
        data,
        out: args.out_dir(),
        tokenizer,
        init_from: args.init_from.clone(),
        hidden: args.n_embd,
        layers: args.n_layer,
        heads: args.n_head,
        block_size: args.block_size,
        val_fraction: args.val_fraction,
        train: args.settings(),
        overwrite: args.overwrite,
    })
}

/// Plan `wgformer finetune --arch bert --task classify <flags>` (or its resume).
pub fn plan_finetuning(args: &crate::cli::finetune::Args) -> Result<BertPlan> {
    if args.resume {
        return plan_bert_resume(&args.out, args.steps);
    }
    match args.task.as_deref() {
        Some("classify") => {}
        None => return Err(Error::Invalid("--arch bert needs --task classify".into())),
        Some(t) => return Err(Error::Invalid(format!("--task {t:?}: expected classify"))),
    }
    if args.pack {
        return Err(Error::Invalid("--pack applies to --arch gpt2".into()));
    }
    let data = args.data.clone().ok_or_else(|| {
        Error::Invalid("--data is required: a JSONL of {\"text\", \"label\"} lines".into())
    })?;
    plan_bert(&BertOptions {
        objective: Objective::Classify,
        data,
        out: args.out.clone(),
        tokenizer: None,
        init_from: args.init_from.clone(),
        hidden: None,
        layers: None,
        heads: None,
        block_size: args.block_size,
        val_fraction: args.val_fraction,
        train: args.settings(),
        overwrite: args.overwrite,
    })
}

fn run_plan(opts: &GpuOptions, plan: BertPlan, stop_at: Option<u64>) -> Result<bool> {
    let ctx = pollster::block_on(GpuContext::with_needs(opts, &plan.needs()))?;
    let mut obs = ProgressObserver::new();
    let out = ctx.block_on(train_bert(&ctx, plan, stop_at, &mut obs))?;
    let s = &out.state;
    let val = s.last_val_loss.map_or("-".into(), |v| format!("{v:.4}"));
    println!(
        "trained {} steps in {:.1} min; validation loss {val}",
        s.step,
        s.elapsed_s / 60.0
    );
    if let Some((ok, n)) = out.accuracy {
        println!(
            "validation accuracy: {ok}/{n} = {:.1}%",
            100.0 * ok as f64 / n.max(1) as f64
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

/// `wgformer train --arch bert`.
pub fn train(opts: &GpuOptions, args: &crate::cli::train::Args) -> Result<bool> {
    run_plan(opts, plan_pretraining(args)?, args.stop_at)
}

/// `wgformer finetune --arch bert`.
pub fn finetune(opts: &GpuOptions, args: &crate::cli::finetune::Args) -> Result<bool> {
    run_plan(opts, plan_finetuning(args)?, args.stop_at)
}
