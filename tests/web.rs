//! The browser demo, end to end: the page built by `scripts/build-web` (target/web) runs
//! in headless Chromium on WebGPU (tests/web/demo.mjs through playwright-core), and must
//! agree with the native CLI on the shipped model: the same 32 greedy tokens, and the
//! first step's logits within 1e-3. 20 training steps in the page must lower the loss.
//! Screenshots of each panel land in target/web-test. The README's test command
//! (scripts/test) builds the page and installs the browser first; without them this test
//! fails and says what to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use wgformer::gpu::Needs;
use wgformer::infer::generator::{GenerateOptions, Generator};
use wgformer::infer::model::Model;
use wgformer::testing::test_contexts;

const PROMPT: &str = "ROMEO:";
const TOKENS: usize = 32;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run the CLI's `generate` greedily on the shipped model; its stdout.
fn cli_generate(model: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wgformer"))
        .args(["generate", "--model"])
        .arg(model)
        .args([
            "--prompt",
            PROMPT,
            "--max-tokens",
            &TOKENS.to_string(),
            "--greedy",
        ])
        .args(extra)
        .output()
        .expect("running wgformer generate");
    assert!(
        out.status.success(),
        "wgformer generate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Every shader as the library compiles it (prelude, common helpers, source) into `dir`,
/// for the page's check that the browser's own WGSL compiler accepts them all: one file
/// per shader, named after it, those that need `shader-f16` ending in `.f16.wgsl` (the
/// page compiles them where the adapter has the feature).
fn write_shaders(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let shaders = wgformer::kernels::shaders::all();
    let f16 = wgformer::kernels::shaders::f16();
    for sh in shaders.iter().chain(f16.iter()) {
        let name: String = sh
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let suffix = if sh.needs_f16() { ".f16.wgsl" } else { ".wgsl" };
        let file = dir.join(format!("{}{suffix}", name.trim_end_matches('_')));
        std::fs::write(&file, sh.compiled_source()).unwrap();
    }
}

#[test]
fn browser_demo_matches_native_and_trains() {
    let root = root();
    let site = root.join("target/web");
    assert!(
        site.join("pkg/wgformer_web_bg.wasm").is_file(),
        "{} has no built page: run scripts/build-web (the README's test command, scripts/test, \
         does)",
        site.display()
    );
    assert!(
        root.join("tests/web/node_modules/playwright-core").is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Chromium and playwright-core: run scripts/ensure-browser"
    );
    write_shaders(&site.join("shaders"));
    let model_dir = root.join("assets/models/shakespeare-char");

    // Native expectations: the CLI's greedy ids and text, the library's first logits.
    let ids_line = cli_generate(&model_dir, &["--print-ids"]);
    let ids: Vec<u32> = ids_line
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.parse().expect("an id"))
        .collect();
    assert_eq!(ids.len(), TOKENS, "CLI ids: {ids_line:?}");
    let text_out = cli_generate(&model_dir, &[]);
    let text = text_out
        .strip_prefix(PROMPT)
        .and_then(|t| t.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("CLI text {text_out:?} should be the prompt, the text, \\n"))
        .to_string();
    let ctx = test_contexts(&Needs::default()).remove(0);
    let model = Arc::new(Model::load_on(Arc::new(ctx), &model_dir).unwrap());
    let mut gen = Generator::new(model.clone()).unwrap();
    let prompt_ids =
        wgformer::tokenizer::encode(model.tokenizer.as_ref().unwrap(), PROMPT).unwrap();
    let first = model
        .ctx
        .block_on(gen.generate(&prompt_ids, &GenerateOptions::greedy(1)))
        .unwrap();
    assert_eq!(
        first.ids[0], ids[0],
        "library and CLI disagree on the first token"
    );
    let logits = model
        .ctx
        .block_on(gen.decoder().logits(&model.ctx))
        .unwrap();

    let out = root.join("target/web-test");
    std::fs::create_dir_all(&out).unwrap();
    let expect = out.join("expected.json");
    let json = serde_json::json!({ "prompt": PROMPT, "ids": ids, "text": text, "logits": logits });
    std::fs::write(&expect, json.to_string()).unwrap();

    let run = Command::new("node")
        .arg(root.join("tests/web/demo.mjs"))
        .arg("--site")
        .arg(&site)
        .arg("--expect")
        .arg(&expect)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("running node tests/web/demo.mjs (is Node.js installed?)");
    let log = String::from_utf8_lossy(&run.stderr);
    eprintln!("{log}");
    assert!(run.status.success(), "the browser test failed:\n{log}");
    for shot in ["status.png", "generate.png", "train.png"] {
        assert!(out.join(shot).is_file(), "no screenshot {shot}");
    }
}
