//! Perplexity: windows score every target exactly once at any stride; the evaluator's
//! loss equals the fixture's (Hugging Face's) loss, and equals an f64 log-softmax of full
//! forward logits for overlapping windows; `wgformer eval` end to end on a text file.

use std::path::{Path, PathBuf};
use std::process::Command;

use wgformer::gpu::{GpuContext, Needs, Schedule};
use wgformer::infer::eval::{windows, Evaluator, Window};
use wgformer::model::gpt2::{record_forward, Activations, Gpt2};
use wgformer::model::Gpt2Config;
use wgformer::rng::Rng;
use wgformer::testing::test_contexts;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/gpt2-tiny")
}

#[test]
fn windows_score_each_target_once() {
    let tokens: Vec<u32> = (0..50).collect();
    for (t, stride) in [(8, 8), (8, 3), (8, 1), (16, 16), (64, 64), (7, 5)] {
        let ws = windows(&tokens, t, stride).unwrap();
        let mut seen = vec![0; tokens.len()];
        for (i, w) in ws.iter().enumerate() {
            let start = i * stride;
            for j in 0..t {
                if w.y[j] != -100 {
                    // target j of window i is token start + j + 1, predicted from start + j
                    assert_eq!(w.y[j] as usize, start + j + 1);
                    assert_eq!(w.x[j] as usize, start + j);
                    seen[start + j + 1] += 1;
                }
            }
        }
        assert_eq!(seen[0], 0);
        assert!(
            seen[1..].iter().all(|&n| n == 1),
            "t={t} stride={stride}: {seen:?}"
        );
    }
    assert!(windows(&[5], 8, 8)
        .unwrap_err()
        .to_string()
        .contains("at least 2"));
    assert!(windows(&tokens, 8, 9)
        .unwrap_err()
        .to_string()
        .contains("stride"));
    assert!(windows(&tokens, 0, 0).is_err());
}

fn context() -> GpuContext {
    test_contexts(&Needs::default()).remove(0)
}

/// The fixture's x, y (B, T) and loss, from Hugging Face.
fn fixture_batch() -> (usize, usize, Vec<i32>, Vec<i32>, f32) {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let i32s = |name: &str| -> (Vec<usize>, Vec<i32>) {
        let t = st.tensor(name).unwrap();
        let v = match t.dtype() {
            safetensors::Dtype::I64 => bytemuck::pod_collect_to_vec::<u8, i64>(t.data())
                .into_iter()
                .map(|x| x as i32)
                .collect(),
            _ => bytemuck::pod_collect_to_vec::<u8, i32>(t.data()),
        };
        (t.shape().to_vec(), v)
    };
    let (shape, x) = i32s("x");
    let (_, y) = i32s("y");
    let loss: Vec<f32> = bytemuck::pod_collect_to_vec(st.tensor("loss").unwrap().data());
    (shape[0], shape[1], x, y, loss[0])
}

#[test]
fn evaluator_loss_matches_the_fixture() {
    let ctx = context();
    let model = Gpt2::load(&ctx, &fixture()).unwrap();
    let (b, t, x, y, want) = fixture_batch();
    let eval = Evaluator::new(&ctx, &model, b, t).unwrap();
    let ws: Vec<Window> = (0..b)
        .map(|r| Window {
            x: x[r * t..(r + 1) * t].to_vec(),
            y: y[r * t..(r + 1) * t].to_vec(),
        })
        .collect();
    let (sum, count) = ctx.block_on(eval.windows_loss(&ctx, &ws)).unwrap();
    assert_eq!(count, b * t);
    let mean = sum / count as f64;
    assert!((mean - want as f64).abs() < 1e-4, "mean {mean} vs {want}");
    // Fewer windows than B: the rest is padding that counts nothing.
    let (sum1, count1) = ctx.block_on(eval.windows_loss(&ctx, &ws[..1])).unwrap();
    assert_eq!(count1, t);
    assert!(sum1 > 0.0 && sum1 < sum);
}

/// Σ over scored targets of -log softmax(logits)[target], in f64, from full forward passes.
fn reference_nll(ctx: &GpuContext, model: &Gpt2, ws: &[Window], t: usize) -> (f64, usize) {
    let v = model.config.vocab_size;
    let acts = Activations::new(ctx, &model.config, 1, t, "ref.").unwrap();
    let mut s = Schedule::new("forward");
    record_forward(&mut s, ctx, model, &acts).unwrap();
    let (mut sum, mut count) = (0f64, 0);
    for w in ws {
        acts.write_batch(ctx, v, &w.x, None).unwrap();
        s.run(ctx);
        let logits = ctx.block_on(acts.logits.read_f32(ctx)).unwrap();
        for j in 0..t {
            if w.y[j] < 0 {
                continue;
            }
            let row = &logits[j * v..(j + 1) * v];
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
            sum += lse - row[w.y[j] as usize] as f64;
            count += 1;
        }
    }
    (sum, count)
}

#[test]
fn strided_perplexity_matches_a_reference() {
    let ctx = context();
    let model = Gpt2::init(&ctx, Gpt2Config::new(509, 32, 48, 2, 4), 5).unwrap();
    let mut rng = Rng::new(2);
    let tokens: Vec<u32> = (0..75).map(|_| rng.below(509) as u32).collect();
    for (b, stride) in [(1, 32), (3, 12)] {
        let eval = Evaluator::new(&ctx, &model, b, 32).unwrap();
        let mut calls = 0;
        let report = ctx
            .block_on(eval.evaluate(&ctx, &tokens, stride, |_, _| calls += 1))
            .unwrap();
        let ws = windows(&tokens, 32, stride).unwrap();
        assert_eq!(report.windows, ws.len());
        assert_eq!(calls, ws.len().div_ceil(b));
        assert_eq!(report.tokens, tokens.len() - 1);
        let (sum, count) = reference_nll(&ctx, &model, &ws, 32);
        assert_eq!(count, report.tokens);
        let want = sum / count as f64;
        assert!(
            (report.mean_loss - want).abs() < 1e-4,
            "B={b} stride {stride}: {} vs {want}",
            report.mean_loss
        );
        assert!((report.perplexity - want.exp()).abs() < 1e-3 * want.exp());
        eprintln!(
            "B={b} stride {stride}: loss {} ppl {}",
            report.mean_loss, report.perplexity
        );
    }
}

#[test]
fn eval_command_reports_perplexity_of_a_text_file() {
    let ctx = context();
    let dir = std::env::temp_dir().join(format!("wgformer-eval-{}", std::process::id()));
    let gpt2 = Gpt2::init(&ctx, Gpt2Config::new(50257, 64, 48, 2, 4), 1).unwrap();
    ctx.block_on(gpt2.save(&ctx, &dir)).unwrap();
    let data = dir.join("data.txt");
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(4);
    std::fs::write(&data, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .args(["eval", "--model"])
        .arg(&dir)
        .arg("--data")
        .arg(&data)
        .args(["--context", "32", "--batch", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let field = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let (loss, ppl) = (field("mean loss: "), field("perplexity: "));
    // A random init predicts about uniformly: ln(50257) ≈ 10.8.
    assert!((loss - 50257f64.ln()).abs() < 0.5, "{stdout}");
    assert!((ppl - loss.exp()).abs() < 1e-3 * ppl, "{stdout}");
    // A missing file is named.
    let out = Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .args(["eval", "--model"])
        .arg(&dir)
        .args(["--data", "/no/such.txt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--data /no/such.txt"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
