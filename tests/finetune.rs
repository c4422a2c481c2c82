//! `wgformer finetune` end to end at toy size: a character-level model pretrained briefly
//! on Shakespeare, then fine-tuned on six prompt → completion pairs, learns the mapping:
//! the loss on completion tokens (prompts are masked with -100) falls far below the
//! pretrained model's, and greedy decoding of each training prompt gives its completion.

use std::path::PathBuf;

use wgformer::gpu::Needs;
use wgformer::model::gpt2::generate_greedy;
use wgformer::testing::test_contexts;
use wgformer::train::data::{read_examples, TINY_SHAKESPEARE};
use wgformer::train::metrics::{Metrics, Record};
use wgformer::train::tokenize::decode;
use wgformer::train::{train, Silent};

const PAIRS: &str = r#"{"prompt": "romeo loves", "completion": " juliet\n"}
{"prompt": "hamlet loves", "completion": " ophelia\n"}
{"prompt": "othello loves", "completion": " desdemona\n"}
{"prompt": "antony loves", "completion": " cleopatra\n"}
{"prompt": "troilus loves", "completion": " cressida\n"}
{"prompt": "orlando loves", "completion": " rosalind\n"}
"#;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgformer-finetune-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn finetuning_learns_prompt_to_completion_pairs() {
    for ctx in &test_contexts(&Needs::default()) {
        let dir = scratch("pairs");
        let text = &TINY_SHAKESPEARE[..20_000];
        let corpus = dir.join("text.txt");
        std::fs::write(&corpus, &text[..text.rfind('\n').unwrap() + 1]).unwrap();
        let pairs = dir.join("pairs.jsonl");
        std::fs::write(&pairs, PAIRS).unwrap();
        let (pre, sft) = (dir.join("pretrained"), dir.join("sft"));
        let t0 = std::time::Instant::now();

        #[rustfmt::skip]
        let flags = [
            "--data", corpus.to_str().unwrap(), "--out", pre.to_str().unwrap(),
            "--steps", "30", "--lr", "1e-2", "--warmup-steps", "5", "--eval-every", "30",
            "--eval-batches", "2", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "32", "--batch-size", "8",
        ];
        let plan = wgformer::cli::train::parse(&flags).unwrap().plan().unwrap();
        ctx.block_on(train(ctx, plan, None, &mut Silent)).unwrap();

        // Every example in every batch (B = 6), evaluated on the training pairs.
        #[rustfmt::skip]
        let flags = [
            "--init-from", pre.to_str().unwrap(), "--data", pairs.to_str().unwrap(),
            "--out", sft.to_str().unwrap(), "--steps", "240", "--lr", "1e-2",
            "--warmup-steps", "10", "--val-fraction", "0", "--batch-size", "6",
            "--eval-every", "120", "--eval-batches", "1",
        ];
        let plan = wgformer::cli::finetune::parse(&flags)
            .unwrap()
            .plan()
            .unwrap();
        let outcome = ctx.block_on(train(ctx, plan, None, &mut Silent)).unwrap();
        let evals: Vec<(u64, f32)> = Metrics::read(&sft.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                Record::Eval { step, val_loss, .. } => Some((step, val_loss)),
                _ => None,
            })
            .collect();
        eprintln!(
            "{}: completion loss {evals:?} ({:.1} s)",
            ctx.adapter_name(),
            t0.elapsed().as_secs_f64()
        );
        let (pretrained, finetuned) = (evals[0].1, evals.last().unwrap().1);
        assert_eq!(
            evals[0].0, 0,
            "the first evaluation is the pretrained model"
        );
        assert!(
            finetuned < 0.5 && finetuned < pretrained / 4.0,
            "completion loss went from {pretrained} only to {finetuned}"
        );

        let tok = &outcome.tokenizer;
        for e in read_examples(&pairs, tok).unwrap() {
            let prompt: Vec<i32> = e.prompt.iter().map(|&t| t as i32).collect();
            let total = prompt.len() + e.completion.len();
            let out = ctx
                .block_on(generate_greedy(ctx, &outcome.model, &prompt, total))
                .unwrap();
            let got: Vec<u32> = out[prompt.len()..].iter().map(|&t| t as u32).collect();
            assert_eq!(
                decode(tok, &got).unwrap(),
                decode(tok, &e.completion).unwrap(),
                "greedy completion of {:?}",
                decode(tok, &e.prompt).unwrap()
            );
        }
    }
}
