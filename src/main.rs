//! The `wgformer` command line. Everything here is an edge: it parses flags, blocks on
//! the library's futures (pollster, `GpuContext::block_on`) and prints.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgformer::gpu::{
    list_adapters, AdapterReport, BackendChoice, GpuContext, GpuOptions, ShaderChecks,
};
use wgformer::Result;

#[derive(Parser)]
#[command(
    name = "wgformer",
    version,
    about = "Transformer training and inference in WGSL compute shaders, on any GPU",
    long_about = "Transformer training and inference in WGSL compute shaders, run through wgpu \
                  on Vulkan, Metal, DX12 or GL.\n\nWith no command: train a small character-level GPT on tiny Shakespeare for a few minutes and print a \
                  sample (`wgformer info` lists adapters, `wgformer selfcheck` checks every \
                  kernel against its CPU reference)."
)]
struct Cli {
    /// Graphics API to use: vulkan, metal, dx12, gl or any.
    #[arg(long, global = true, env = "WGFORMER_BACKEND", default_value = "any")]
    backend: String,

    /// Use the first adapter whose name contains this text (case-insensitive).
    #[arg(long, global = true, env = "WGFORMER_ADAPTER")]
    adapter: Option<String>,

    /// Print per-kernel GPU time (selfcheck; bench always profiles). Needs timestamp
    /// queries on the adapter.
    #[arg(long, global = true)]
    profile: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter found, with the limits and features that matter to wgformer.
    Info {
        /// Print only the adapter that --backend/--adapter select.
        #[arg(long)]
        selected: bool,
    },
    /// Run every kernel on the selected adapter and compare it with the CPU reference.
    Selfcheck,
    /// Pretrain a model on text (by default: tiny Shakespeare, character level).
    Train(Box<wgformer::cli::train::Args>),
    /// Supervised fine-tuning on prompt → completion pairs.
    Finetune(wgformer::cli::finetune::Args),
    /// Generate text from a model, streaming tokens as they are sampled.
    Generate(wgformer::cli::generate::Args),
    /// Translate with an encoder–decoder (--arch seq2seq): greedy or beam search, from
    /// --text or stdin line by line.
    Translate(wgformer::cli::seq2seq::TranslateArgs),
    /// Sentence embeddings with a BERT (mean pooling, L2-normalised), from --text or stdin.
    Embed(wgformer::cli::bert::EmbedArgs),
    /// Write a generated toy task (reverse, sort, copy) as source → target pairs in JSONL.
    MakePairs(wgformer::cli::seq2seq::MakePairsArgs),
    /// Perplexity and mean loss of a model over a text file.
    Eval(wgformer::cli::eval::Args),
    /// Serve a model over HTTP with the OpenAI completions API.
    Serve(wgformer::cli::serve::Args),
    /// Serve the browser demo built by scripts/build-web (target/web) on localhost.
    Web(wgformer::cli::web::Args),
    /// Compare with a reference fixture (logits, loss, every gradient, AdamW steps, greedy
    /// decoding), printing each comparison; exits non-zero if any fails. GPT-2 fixtures
    /// (transformers) and encoder–decoder ones (torch.nn.Transformer) are recognised by
    /// their config.json.
    Parity {
        /// Fixture directory (config.json, model.safetensors, reference.safetensors,
        /// reference.json), e.g. ../shared/fixtures/gpt2-tiny
        dir: std::path::PathBuf,
    },
    /// Measure speed (JSON and markdown naming the adapter and date): kernels against the
    /// FMA ceiling, training steps, generation, or all of them beside a peer.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Every kernel at GPT-2 124M shapes (C=768, NH=12, V=50257), plus a pure-FMA kernel.
    Kernels {
        /// Batch size B.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Sequence length T.
        #[arg(long, default_value_t = 64)]
        seq: usize,
        /// Timed replays per kernel (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Passes over all the kernels; each kernel's fastest pass is reported (for hosts
        /// whose speed swings, such as a shared VM).
        #[arg(long, default_value_t = 1)]
        passes: usize,
        /// Also time each case's launches one by one (a product bound in chunks, the
        /// three products of a backward, the classifier's chunks): a table after the
        /// main one, and `launches` in the JSON. Needs timestamp queries.
        #[arg(long)]
        launches: bool,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// A full training step (forward, loss, backward, clip, AdamW) of a random model:
    /// ms/step, tokens/s and, with timestamps, where the time goes.
    Step {
        /// Model size: baby, tiny, gpt2 (124M) or gpt2-medium (350M).
        #[arg(long, default_value = "baby")]
        preset: String,
        /// Batch size B.
        #[arg(long, default_value_t = 12)]
        batch: usize,
        /// Sequence length T (at most the preset's context).
        #[arg(long, default_value_t = 64)]
        seq: usize,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Precision of the matmuls: f32; f16 (f16 copies of the weights); mixed (f16
        /// weights, activations and gradients at the block matmuls, loss scaling). f16
        /// and mixed need shader-f16.
        #[arg(long, default_value = "f32")]
        precision: wgformer::model::half::Precision,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// KV-cached generation of a random model or a checkpoint: prefill and decode tokens/s,
    /// and where one decode step's time goes.
    Generate {
        /// Model size (tiny, baby, gpt2, gpt2-medium) with random weights, or a checkpoint
        /// directory.
        #[arg(long, default_value = "baby")]
        model: String,
        /// Prompt length in tokens (random ids).
        #[arg(long, default_value_t = 8)]
        prompt: usize,
        /// Tokens to generate (greedy).
        #[arg(long, default_value_t = 32)]
        tokens: usize,
        /// Also time one decode step at positions across the context.
        #[arg(long)]
        positions: bool,
        /// Precision the matmuls read weights in: f32, or f16 (needs shader-f16; mixed
        /// generates as f16 does).
        #[arg(long, default_value = "f32")]
        precision: wgformer::model::half::Precision,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// The whole suite in one run: kernels, the baby GPT's and a GPT-2 124M training step,
    /// generation; with --peer, each comparable figure beside a peer's (scripts/bench-peers).
    All {
        /// Timed replays per kernel and timed training steps per case.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// B and T of the GPT-2 124M training step (B=1, T=32 takes ~15 s a step on a
        /// 2-core CPU adapter).
        #[arg(long, default_value_t = 1)]
        gpt2_batch: usize,
        #[arg(long, default_value_t = 32)]
        gpt2_seq: usize,
        /// Skip GPT-2 124M (its step and generation), for a quick run.
        #[arg(long)]
        no_gpt2: bool,
        /// A peer's report on the same adapter (JSON of benches/peer-burn) to compare with.
        #[arg(long)]
        peer: Option<std::path::PathBuf>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Write the report as markdown to this file (it is printed either way).
        #[arg(long)]
        markdown: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    // libwayland prints an error on every Vulkan instance when this is unset; wgformer
    // opens no windows, so a private runtime dir silences it without changing anything.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    let opts = GpuOptions {
        backend: cli.backend.parse::<BackendChoice>()?,
        adapter: cli.adapter.clone(),
        profile: cli.profile,
    };
    match cli.command {
        Some(Command::Info { selected }) => info(&opts, selected),
        Some(Command::Selfcheck) => selfcheck(&opts),
        Some(Command::Bench { what }) => bench(&opts, what),
        Some(Command::Parity { dir }) => parity(&opts, &dir),
        Some(Command::Train(a)) => wgformer::cli::train::run(&opts, *a),
        Some(Command::Finetune(a)) => wgformer::cli::finetune::run(&opts, a),
        Some(Command::Generate(a)) => wgformer::cli::generate::run(&opts, a),
        Some(Command::Translate(a)) => wgformer::cli::seq2seq::translate(&opts, a),
        Some(Command::Embed(a)) => wgformer::cli::bert::embed(&opts, a),
        Some(Command::MakePairs(a)) => wgformer::cli::seq2seq::make_pairs(a),
        Some(Command::Eval(a)) => wgformer::cli::eval::run(&opts, a),
        Some(Command::Serve(a)) => wgformer::cli::serve::run(&opts, a),
        Some(Command::Web(a)) => wgformer::cli::web::run(a),
        None => wgformer::cli::train::run_default(&opts),
    }
}

fn info(opts: &GpuOptions, selected: bool) -> Result<bool> {
    let adapters = pollster::block_on(list_adapters(opts));
    if adapters.is_empty() {
        // Same message as opening a device would give.
        pollster::block_on(wgformer::gpu::select_adapter(opts))?;
    }
    let checks = ShaderChecks::from_env()?;
    let take = if selected { 1 } else { adapters.len() };
    if !selected {
        println!("{} adapter(s) found, best first:", adapters.len());
    }
    for a in adapters.iter().take(take) {
        println!("{}", AdapterReport::of(a));
        let tuned = match wgformer::kernels::tune::cached(&a.get_info(), checks) {
            Some(e) => {
                // Families first ("rows 0.53"), then the tiled kernel's shapes.
                let (families, tiles): (Vec<_>, Vec<_>) =
                    e.gflops.iter().partition(|(k, _)| !k.contains(' '));
                let list = |v: Vec<(&String, &f64)>| {
                    v.iter()
                        .map(|(k, g)| format!("{k} {g:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!(
                    "{} (tuned {}; GFLOP/s: {})\n  tiled kernel's tile:           {} (GFLOP/s: {})",
                    e.kernel,
                    e.date,
                    list(families),
                    e.tile,
                    list(tiles)
                )
            }
            None => "not tuned yet (timed on first use, then cached)".into(),
        };
        println!("  matmul kernel:                 {tuned}");
        println!("  shader runtime checks:         {}", checks.describe());
    }
    Ok(true)
}

fn selfcheck(opts: &GpuOptions) -> Result<bool> {
    let ctx = pollster::block_on(GpuContext::new(opts))?;
    println!("selfcheck on {}", ctx.adapter_name());
    let (checks, times) = ctx.block_on(wgformer::selfcheck::selfcheck_profiled(&ctx))?;
    let mut ok = true;
    if let Some(c) = checks.first() {
        println!("  at {}", c.size);
    }
    for c in &checks {
        match &c.outcome {
            Ok(err) => println!("  ok    {:<26} max |Δ| {err:.2e}", c.kernel),
            Err(msg) => {
                ok = false;
                println!("  FAIL  {:<26} {msg}", c.kernel);
            }
        }
    }
    if opts.profile {
        if times.is_empty() {
            println!(
                "  (no per-kernel times: {} has no timestamp queries)",
                ctx.adapter_name()
            );
        } else {
            println!("  GPU time per launch:");
            for t in &times {
                println!("    {:>9.3} ms  {}", t.nanos * 1e-6, t.label);
            }
        }
    }
    println!(
        "{} passed, {} failed",
        checks.iter().filter(|c| c.outcome.is_ok()).count(),
        checks.iter().filter(|c| c.outcome.is_err()).count()
    );
    Ok(ok)
}

fn bench(opts: &GpuOptions, what: BenchWhat) -> Result<bool> {
    match what {
        BenchWhat::Kernels {
            batch,
            seq,
            reps,
            passes,
            launches,
            json,
        } => {
            let opts = GpuOptions {
                profile: true,
                ..opts.clone()
            };
            let shape = wgformer::bench::BenchShape {
                b: batch,
                t: seq,
                ..Default::default()
            };
            // The classifier's whole logits, (B·T, V), are the largest buffer.
            let needs = wgformer::gpu::Needs {
                max_buffer_size: (batch * seq * shape.v * 4) as u64,
                ..Default::default()
            };
            let ctx = pollster::block_on(GpuContext::with_needs(&opts, &needs))?;
            eprintln!("benchmarking kernels on {}", ctx.adapter_name());
            let report = wgformer::bench::run_kernels(&ctx, shape, reps.max(1), passes, launches)?;
            println!("{}", report.markdown());
            write_json(json.as_deref(), &report)?;
            Ok(true)
        }
        BenchWhat::Step {
            preset,
            batch,
            seq,
            steps,
            precision,
            json,
        } => {
            let cfg = wgformer::model::Gpt2Config::preset(&preset, None)?;
            let opts = GpuOptions {
                profile: true,
                ..opts.clone()
            };
            let needs = wgformer::model::gpt2::Gpt2::needs(&cfg, batch, seq);
            let ctx = pollster::block_on(GpuContext::with_needs(&opts, &needs))?;
            eprintln!(
                "benchmarking a {preset} training step on {}",
                ctx.adapter_name()
            );
            let report =
                wgformer::bench::run_step(&ctx, &cfg, &preset, batch, seq, steps, precision)?;
            println!("{}", report.markdown());
            write_json(json.as_deref(), &report)?;
            Ok(true)
        }
        BenchWhat::Generate {
            model,
            prompt,
            tokens,
            positions,
            precision,
            json,
        } => {
            let opts = GpuOptions {
                profile: true,
                ..opts.clone()
            };
            let model = if std::path::Path::new(&model).exists() {
                pollster::block_on(wgformer::infer::Model::load(model.as_ref(), &opts))?
            } else {
                let cfg = wgformer::model::Gpt2Config::preset(&model, None)?;
                let needs = wgformer::infer::model::needs(&cfg);
                let ctx =
                    std::sync::Arc::new(pollster::block_on(GpuContext::with_needs(&opts, &needs))?);
                let gpt2 = wgformer::model::gpt2::Gpt2::init(&ctx, cfg, 1)?;
                wgformer::infer::Model::from_parts(
                    ctx,
                    gpt2,
                    None,
                    format!("{model} (random init)"),
                )
            };
            let mut model = model.with_precision(precision)?;
            if precision != wgformer::model::half::Precision::F32 {
                model.name += &format!(" {precision}");
            }
            eprintln!(
                "benchmarking generation of {} on {}",
                model.name,
                model.ctx.adapter_name()
            );
            let report = wgformer::bench::run_generate(
                std::sync::Arc::new(model),
                prompt,
                tokens,
                positions,
            )?;
            println!("{}", report.markdown());
            write_json(json.as_deref(), &report)?;
            Ok(true)
        }
        BenchWhat::All {
            reps,
            gpt2_batch,
            gpt2_seq,
            no_gpt2,
            peer,
            json,
            markdown,
        } => {
            use wgformer::bench::suite::{run_suite, SuiteOptions};
            let mut o = SuiteOptions {
                kernels: wgformer::bench::BenchShape::default(),
                reps,
                steps: vec![("baby".into(), 12, 64)],
                timed_steps: reps,
                // Decode over most of the context; a prefill of the whole context.
                generate: vec![("baby".into(), 8, 56), ("baby".into(), 63, 1)],
            };
            if !no_gpt2 {
                o.steps.push(("gpt2".into(), gpt2_batch, gpt2_seq));
                o.generate.push(("gpt2".into(), 8, 4));
            }
            let peer = peer
                .map(|p| wgformer::bench::PeerReport::load(&p))
                .transpose()?;
            let mut report = run_suite(opts, &o)?;
            if let Some(p) = peer {
                report.compare_with(p);
            }
            let text = report.markdown();
            println!("{text}");
            write_json(json.as_deref(), &report)?;
            if let Some(path) = markdown {
                std::fs::write(&path, text).map_err(|e| wgformer::Error::Io {
                    path: path.display().to_string(),
                    source: e,
                })?;
            }
            Ok(true)
        }
    }
}

/// Write `report` as pretty JSON to `path`, if given.
fn write_json<T: serde::Serialize>(path: Option<&std::path::Path>, report: &T) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report).expect("report serializes");
    std::fs::write(path, text).map_err(|e| wgformer::Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}

fn parity(opts: &GpuOptions, dir: &std::path::Path) -> Result<bool> {
    let ctx = pollster::block_on(GpuContext::new(opts))?;
    println!("parity of {} on {}", dir.display(), ctx.adapter_name());
    let report = ctx.block_on(wgformer::parity::parity(&ctx, dir))?;
    for c in &report {
        println!("  {c}");
    }
    let failed = report.iter().filter(|c| !c.pass).count();
    println!("{} passed, {} failed", report.len() - failed, failed);
    Ok(failed == 0)
}
