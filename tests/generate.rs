//! KV-cached generation end to end: the logits of cached decoding equal those of full
//! recomputation at every position (prefills of 1, 5 and 17 tokens, so padded buckets
//! too); greedy decoding through the cache reproduces the gpt2-tiny fixture's
//! continuation; one submit per token; seeds make sampling repeatable; text streams
//! decode to the whole text and stop strings cut it; requests that cannot fit are
//! refused with the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wgformer::gpu::{GpuContext, Needs, Schedule};
use wgformer::infer::decoder::Decoder;
use wgformer::infer::{FinishReason, GenerateOptions, Generator, Model};
use wgformer::kernels::sampling::SampleSettings;
use wgformer::model::gpt2::{generate_greedy, record_forward, Activations, Gpt2};
use wgformer::model::Gpt2Config;
use wgformer::rng::Rng;
use wgformer::testing::{assert_close, test_contexts};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

fn context() -> Arc<GpuContext> {
    Arc::new(test_contexts(&Needs::default()).remove(0))
}

/// The fixture's generate.prompt and generate.greedy.
fn fixture_greedy() -> (Vec<u32>, Vec<u32>) {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = |name: &str| -> Vec<u32> {
        let t = st.tensor(name).unwrap();
        match t.dtype() {
            safetensors::Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(t.data())
                .into_iter()
                .map(|x| x as u32)
                .collect(),
            _ => bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
                .into_iter()
                .map(|x| x as u32)
                .collect(),
        }
    };
    (ids("generate.prompt"), ids("generate.greedy"))
}

/// Logits (T, V) of `tokens` by a full forward pass at B = 1.
fn full_logits(ctx: &GpuContext, model: &Gpt2, tokens: &[i32]) -> Vec<f32> {
    let acts = Activations::new(ctx, &model.config, 1, tokens.len(), "full.").unwrap();
    let mut s = Schedule::new("full forward");
    record_forward(&mut s, ctx, model, &acts).unwrap();
    acts.write_batch(ctx, model.config.vocab_size, tokens, None)
        .unwrap();
    s.run(ctx);
    ctx.block_on(acts.logits.read_f32(ctx)).unwrap()
}

/// Feed `tokens` to a fresh decoder: the first `prefill` in one pass, then one at a time;
/// check the logits after each feed against the full pass's row of its last position.
fn check_cached_logits(ctx: &GpuContext, model: &Gpt2, tokens: &[i32], prefill: usize) -> f32 {
    let v = model.config.vocab_size;
    let full = full_logits(ctx, model, tokens);
    let mut dec = Decoder::new(ctx, model, 1, tokens.len()).unwrap();
    let greedy = [SampleSettings::greedy()];
    let mut worst = 0f32;
    let mut fed = 0;
    while fed < tokens.len() {
        let n = if fed == 0 { prefill } else { 1 };
        ctx.block_on(dec.feed(ctx, &[&tokens[fed..fed + n]], &greedy))
            .unwrap();
        fed += n;
        let got = ctx.block_on(dec.logits(ctx)).unwrap();
        let want = &full[(fed - 1) * v..fed * v];
        let name = format!("logits at position {} (prefill {prefill})", fed - 1);
        worst = worst.max(assert_close(&name, &got, want, 1e-4, 0.0).max_abs);
    }
    worst
}

#[test]
fn cached_logits_match_full_recomputation_at_every_position() {
    let ctx = context();
    let fixture = Gpt2::load(&ctx, &fixture()).unwrap();
    // HS = 16, a context that is not a power of two, so the last bucket is the context.
    let odd = Gpt2::init(&ctx, Gpt2Config::new(509, 40, 80, 2, 5), 3).unwrap();
    let mut rng = Rng::new(11);
    for (name, model) in [("gpt2-tiny", &fixture), ("random V=509 T=40 C=80", &odd)] {
        let cfg = &model.config;
        let tokens: Vec<i32> = (0..cfg.n_positions)
            .map(|_| rng.below(cfg.vocab_size as u64) as i32)
            .collect();
        for prefill in [1, 5, 17] {
            let worst = check_cached_logits(&ctx, model, &tokens, prefill);
            eprintln!("{name}, prefill {prefill}: max |Δ| {worst:e} over every position");
        }
    }
}

#[test]
fn greedy_through_the_cache_matches_the_fixture() {
    let ctx = context();
    let model = Arc::new(Model::load_on(ctx.clone(), &fixture()).unwrap());
    let (prompt, want) = fixture_greedy();
    let mut gen = Generator::new(model.clone()).unwrap();
    let before = ctx.submit_count();
    let out = ctx
        .block_on(gen.generate(&prompt, &GenerateOptions::greedy(want.len())))
        .unwrap();
    // One submit for the prefill, one per decode step.
    assert_eq!(ctx.submit_count() - before, want.len() as u64);
    assert_eq!(out.ids, want, "greedy continuation of {prompt:?}");
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert!(out.text.is_empty(), "the fixture has no tokenizer");
    // And the same as full recomputation, from another prompt.
    let prompt2 = [7u32, 3, 99, 12];
    let cached = ctx
        .block_on(gen.generate(&prompt2, &GenerateOptions::greedy(20)))
        .unwrap();
    let p2: Vec<i32> = prompt2.iter().map(|&x| x as i32).collect();
    let full = ctx
        .block_on(generate_greedy(&ctx, &model.gpt2, &p2, 24))
        .unwrap();
    let full: Vec<u32> = full[4..].iter().map(|&x| x as u32).collect();
    assert_eq!(cached.ids, full);
}

#[test]
fn sampling_is_repeatable_per_seed() {
    let ctx = context();
    let model = Arc::new(Model::load_on(ctx.clone(), &fixture()).unwrap());
    let mut gen = Generator::new(model).unwrap();
    let prompt = [1u32, 2, 3];
    let run = |gen: &mut Generator, seed, top_k, top_p| {
        let opts = GenerateOptions {
            max_tokens: 20,
            temperature: 1.3,
            top_k,
            top_p,
            seed,
            ..Default::default()
        };
        ctx.block_on(gen.generate(&prompt, &opts)).unwrap().ids
    };
    for (k, p) in [(0, 1.0), (10, 1.0), (0, 0.8), (20, 0.9)] {
        let a = run(&mut gen, 5, k, p);
        assert_eq!(a, run(&mut gen, 5, k, p), "seed 5, top_k {k}, top_p {p}");
        assert_ne!(
            a,
            run(&mut gen, 6, k, p),
            "seeds 5 and 6 gave the same 20 tokens"
        );
    }
}

#[test]
fn requests_that_do_not_fit_are_refused() {
    let ctx = context();
    let model = Arc::new(Model::load_on(ctx.clone(), &fixture()).unwrap());
    let mut gen = Generator::new(model.clone()).unwrap();
    let err = |r: wgformer::Result<()>| r.expect_err("an error").to_string();
    let long = vec![1u32; 30];
    let e = err(gen.stream(&long, &GenerateOptions::greedy(3)).map(|_| ()));
    assert!(
        e.contains("context of 32") && e.contains("at most 2"),
        "{e}"
    );
    let e = err(gen
        .stream(&[1; 32], &GenerateOptions::greedy(1))
        .map(|_| ()));
    assert!(e.contains("the prompt alone fills it"), "{e}");
    let e = err(gen.stream(&[], &GenerateOptions::greedy(3)).map(|_| ()));
    assert!(e.contains("empty"), "{e}");
    let e = err(gen
        .stream(&[5, 101], &GenerateOptions::greedy(3))
        .map(|_| ()));
    assert!(e.contains("101") && e.contains("vocabulary of 101"), "{e}");
    let bad = GenerateOptions {
        temperature: -1.0,
        ..Default::default()
    };
    assert!(err(gen.stream(&[1], &bad).map(|_| ())).contains("temperature"));
    let e = err(model.encode("hello").map(|_| ()));
    assert!(e.contains("no tokenizer"), "{e}");
    // Exactly the context is fine: 30 + 2 = 32.
    let out = ctx
        .block_on(gen.generate(&long, &GenerateOptions::greedy(2)))
        .unwrap();
    assert_eq!(out.ids.len(), 2);
    let e = err(Model::load_on(ctx.clone(), Path::new("/no/such/model")).map(|_| ()));
    assert!(e.contains("--model /no/such/model"), "{e}");
}

/// A small random model with GPT-2's vocabulary, saved and loaded back, so the GPT-2 BPE
/// tokenizer comes with it.
fn tiny_gpt2_vocab_model(ctx: &Arc<GpuContext>) -> Arc<Model> {
    let dir = std::env::temp_dir().join(format!("wgformer-generate-{}", std::process::id()));
    let gpt2 = Gpt2::init(ctx, Gpt2Config::new(50257, 64, 48, 2, 4), 7).unwrap();
    ctx.block_on(gpt2.save(ctx, &dir)).unwrap();
    let model = Model::load_on(ctx.clone(), &dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    Arc::new(model)
}

#[test]
fn streamed_text_decodes_the_ids_and_stop_strings_cut_it() {
    let ctx = context();
    let model = tiny_gpt2_vocab_model(&ctx);
    assert!(model.tokenizer.is_some());
    assert_eq!(model.eos, Some(50256));
    let mut gen = Generator::new(model.clone()).unwrap();
    let prompt = model.encode("The quick brown fox").unwrap();
    let opts = GenerateOptions {
        max_tokens: 30,
        temperature: 0.9,
        seed: 3,
        stop_at_eos: false,
        ..Default::default()
    };
    let mut stream = gen.stream(&prompt, &opts).unwrap();
    let mut text = String::new();
    let mut ids = Vec::new();
    while let Some(t) = ctx.block_on(stream.next()).unwrap() {
        text.push_str(&t.text);
        ids.push(t.id);
    }
    assert_eq!(stream.finish_reason(), Some(FinishReason::Length));
    assert_eq!(ids.len(), 30);
    assert_eq!(
        text,
        model.decode(&ids).unwrap(),
        "streamed pieces ≠ decoded ids"
    );
    // Stop at a piece of that text: the same tokens up to it, the text ends before it.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = text.find(&stop).unwrap();
    let opts = GenerateOptions {
        stop: vec!["never appears \u{1F600}".into(), stop.clone()],
        ..opts
    };
    let out = ctx.block_on(gen.generate(&prompt, &opts)).unwrap();
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, text[..cut], "stop {stop:?}");
    assert_eq!(out.ids[..], ids[..out.ids.len()]);
}

#[test]
fn generate_command_streams_the_fixture_continuation() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgformer"))
            .args(["generate", "--model"])
            .arg(fixture())
            .args(["--prompt-ids", "39,29,70,11,29"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    let (ok, stdout, stderr) = run(&["--greedy", "--max-tokens", "27", "--print-ids"]);
    assert!(ok, "{stderr}");
    let (_, want) = fixture_greedy();
    let want: Vec<String> = want.iter().map(|i| i.to_string()).collect();
    assert_eq!(stdout, want.join(" "));
    assert!(
        stderr.contains("prefill: 5 tokens") && stderr.contains("tok/s"),
        "{stderr}"
    );
    // Seeded sampling repeats.
    let args = [
        "--max-tokens",
        "12",
        "--seed",
        "9",
        "--top-k",
        "30",
        "--top-p",
        "0.9",
    ];
    let (ok, first, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert_eq!(first, run(&args).1);
    // Too long for the context: refused, naming the flags.
    let (ok, _, stderr) = run(&["--max-tokens", "28"]);
    assert!(!ok);
    assert!(
        stderr.contains("--max-tokens") && stderr.contains("context of 32"),
        "{stderr}"
    );
}
