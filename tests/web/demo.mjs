// The browser test of the demo page, run by tests/web.rs (which computes the native
// expectations first):
//
//   node tests/web/demo.mjs --site target/web --expect E.json --out DIR
//
// In headless Chromium on WebGPU it checks that the page gets an adapter, that every
// shader compiles under the browser's WGSL compiler, that greedy
// generation from the shipped model equals the native CLI's (ids and text) and that the
// first step's logits agree within 1e-3, and that 20 training steps in the page lower the
// loss; then, in a browser without WebGPU, that the page says which browsers and flags
// provide it. It saves a screenshot of each panel (status.png, generate.png, train.png,
// status-no-webgpu.png) and of the whole page (page.png) in DIR, prints a JSON summary and exits 0 only if every
// check passed.
import fs from "node:fs";
import path from "node:path";
import { serve, launchBrowser } from "./harness.mjs";

function arg(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[i + 1];
}

const site = path.resolve(arg("--site"));
const expect = JSON.parse(fs.readFileSync(arg("--expect"), "utf8"));
const out = path.resolve(arg("--out"));
fs.mkdirSync(out, { recursive: true });

const summary = { checks: [] };
const check = (name, ok, detail) => {
  summary.checks.push({ name, ok, detail });
  console.error(`${ok ? "ok  " : "FAIL"} ${name}: ${detail}`);
};

const t0 = Date.now();
const srv = await serve(site);
let browser;
const logs = [];
try {
  browser = await launchBrowser();
  summary.browser = browser.version();
  const page = await browser.newPage({ viewport: { width: 900, height: 1400 } });
  page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
  await page.goto(`${srv.url}/index.html`);
  await page.waitForFunction(() => window.demo && window.demo.ready, null, { timeout: 60_000 });
  await page.evaluate(() => window.demo.ready);
  const status = await page.evaluate(() => ({ adapter: demo.adapter, error: demo.error }));
  summary.adapter = status.adapter;
  check("adapter", !!status.adapter, status.adapter ? status.adapter.name || "(unnamed)" : status.error);
  await page.locator("#status").screenshot({ path: path.join(out, "status.png") });
  if (!status.adapter) throw new Error(`no adapter: ${status.error}`);

  // Every shader as the library compiles it (written by tests/web.rs; not the subgroup
  // matmul, native only: browsers want `enable subgroups`) must compile under the
  // browser's own WGSL compiler, not only under naga. Those needing shader-f16
  // (*.f16.wgsl) are compiled where the adapter has it, and counted apart.
  const shaders = fs.readdirSync(path.join(site, "shaders")).filter((f) => f.endsWith(".wgsl"));
  const compile = await page.evaluate(async (files) => {
    const adapter = await navigator.gpu.requestAdapter();
    const f16 = adapter.features.has("shader-f16");
    const device = await adapter.requestDevice({ requiredFeatures: f16 ? ["shader-f16"] : [] });
    const errors = [];
    let compiled = 0;
    let skipped = 0;
    for (const f of files) {
      if (f.endsWith(".f16.wgsl") && !f16) { skipped++; continue; }
      const code = await (await fetch(`shaders/${f}`)).text();
      const info = await device.createShaderModule({ code }).getCompilationInfo();
      compiled++;
      for (const m of info.messages) {
        if (m.type === "error") errors.push(`${f}:${m.lineNum}:${m.linePos}: ${m.message}`);
      }
    }
    device.destroy();
    return { errors, compiled, skipped };
  }, shaders);
  check("shaders compile in the browser", compile.compiled > 10 && compile.errors.length === 0,
    compile.errors.length ? compile.errors.join("; ")
      : `${compile.compiled} files, no errors` +
        (compile.skipped ? `; ${compile.skipped} f16 files not compiled (no shader-f16 here)` : ""));

  // Generation: the shipped model, greedy, against the native CLI.
  await page.waitForFunction(() => demo.generator, null, { timeout: 120_000 });
  const gen = await page.evaluate(
    ([p, n]) => demo.generate({ prompt: p, maxTokens: n, temperature: 0, topK: 0, seed: 0 }),
    [expect.prompt, expect.ids.length],
  );
  summary.generate = { ids: gen.ids, text: gen.text, decode_tokens_per_s: gen.decode_tokens_per_s, prefill_ms: gen.prefill_ms };
  const sameIds = JSON.stringify(gen.ids) === JSON.stringify(expect.ids);
  check("greedy ids", sameIds, sameIds ? `${gen.ids.length} tokens equal` : `page ${JSON.stringify(gen.ids)} vs native ${JSON.stringify(expect.ids)}`);
  check("greedy text", gen.text === expect.text, JSON.stringify(gen.text));
  const logits = await page.evaluate(async (p) => Array.from(await demo.firstLogits(p)), expect.prompt);
  let maxDiff = logits.length === expect.logits.length ? 0 : Infinity;
  for (let i = 0; i < Math.min(logits.length, expect.logits.length); i++) {
    maxDiff = Math.max(maxDiff, Math.abs(logits[i] - expect.logits[i]));
  }
  summary.max_logit_diff = maxDiff;
  check("first-step logits", maxDiff <= 1e-3, `max |Δ| ${maxDiff.toExponential(2)} over ${logits.length} (tolerance 1e-3)`);
  // Leave the page showing the greedy run, then a sampled one for the screenshot.
  await page.evaluate(() => demo.generate({ maxTokens: 120, temperature: 0.8, seed: 1 }));
  await page.locator("#generate").screenshot({ path: path.join(out, "generate.png") });

  // Training: 20 steps in the page.
  const losses = await page.evaluate(() => demo.train(20));
  summary.train_losses = losses;
  const head = losses.slice(0, 3).reduce((a, b) => a + b, 0) / 3;
  const tail = losses.slice(-3).reduce((a, b) => a + b, 0) / 3;
  check("training lowers the loss", losses.length === 20 && tail < head - 0.1,
    `20 steps: mean of first 3 ${head.toFixed(3)}, of last 3 ${tail.toFixed(3)}`);
  const sample = await page.evaluate(() => demo.sample());
  summary.train_sample = sample.text;
  await page.locator("#train").screenshot({ path: path.join(out, "train.png") });
  await page.screenshot({ path: path.join(out, "page.png"), fullPage: true });
  await browser.close();

  // The same page in a browser without WebGPU must say which browsers and flags have it.
  browser = await launchBrowser({ webgpu: false });
  const bare = await browser.newPage({ viewport: { width: 900, height: 900 } });
  await bare.goto(`${srv.url}/index.html`);
  await bare.waitForFunction(() => window.demo && window.demo.ready, null, { timeout: 60_000 });
  await bare.evaluate(() => window.demo.ready);
  const missing = await bare.evaluate(() => ({
    error: demo.error,
    helpShown: !document.getElementById("status-help").hidden,
    help: document.getElementById("status-help").textContent,
  }));
  check("no-WebGPU message", !!missing.error && missing.helpShown && /--enable-unsafe-webgpu/.test(missing.help),
    `${missing.error}; help ${missing.helpShown ? "shown" : "hidden"}`);
  await bare.locator("#status").screenshot({ path: path.join(out, "status-no-webgpu.png") });
} catch (e) {
  check("run", false, e.message);
} finally {
  await browser?.close().catch(() => {});
  await srv.close();
}
summary.seconds = (Date.now() - t0) / 1000;
summary.console = logs;
fs.writeFileSync(path.join(out, "summary.json"), JSON.stringify(summary, null, 2));
const failed = summary.checks.filter((c) => !c.ok);
if (failed.length || summary.checks.length < 7) {
  console.error(`browser test failed (${failed.map((c) => c.name).join(", ") || "checks missing"}); console:\n${logs.join("\n")}`);
  process.exitCode = 1;
} else {
  console.error(`browser test passed in ${summary.seconds.toFixed(1)} s; screenshots in ${out}`);
}
