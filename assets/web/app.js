// The demo page: Status, Generate and Train panels over the wasm bindings in
// web/src/lib.rs (built into pkg/ by scripts/build-web). Everything the panels do is
// also reachable as window.demo, which the browser test (tests/web/demo.mjs) drives.

import init, { adapterInfo, Generator, Trainer } from './pkg/wgformer_web.js';

const MODEL_DIR = 'models/shakespeare-char/';
const TRAIN_TEXT = 'data/tinyshakespeare.txt';
const TRAIN_TEXT_CHARS = 100_000;

const $ = (id) => document.getElementById(id);

const demo = {
  adapter: null,       // adapterInfo(), or null when there is none
  error: null,         // why the page cannot run, if it cannot
  generator: null,     // the shipped model
  trainer: null,       // the in-page model, once training starts
  losses: [],          // [step, loss] of in-page training
  lastGenerate: null,  // what the last generation resolved to
};
window.demo = demo;

function setStatus(text, cls = 'muted') {
  const el = $('status-line');
  el.textContent = text;
  el.className = cls;
}

function showLimits(info) {
  const rows = [
    ['Adapter', info.name || '(unnamed)'],
    ['Backend', `${info.backend}, ${info.device_type}`],
    ['Driver', [info.driver, info.driver_info].filter(Boolean).join(' ') || '—'],
    ['Largest buffer', bytes(info.limits.max_buffer_size)],
    ['Largest storage binding', bytes(info.limits.max_storage_buffer_binding_size)],
    ['Storage buffers per stage', info.limits.max_storage_buffers_per_shader_stage],
    ['Workgroup memory', bytes(info.limits.max_compute_workgroup_storage_size)],
    ['Invocations per workgroup', info.limits.max_compute_invocations_per_workgroup],
    ['Workgroups per dimension', info.limits.max_compute_workgroups_per_dimension],
  ];
  const body = $('status-limits').querySelector('tbody');
  body.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    tr.innerHTML = '<td></td><td></td>';
    tr.children[0].textContent = k;
    tr.children[1].textContent = v;
    return tr;
  }));
  $('status-limits').hidden = false;
}

function bytes(n) {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(0)} KiB`;
  return `${n} B`;
}

async function fetchOk(url, kind) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${r.statusText}`);
  return kind === 'bytes' ? new Uint8Array(await r.arrayBuffer()) : r.text();
}

// ---- Generate ---------------------------------------------------------------------------

async function loadModel() {
  const [config, weights, tokenizer] = await Promise.all([
    fetchOk(MODEL_DIR + 'config.json', 'text'),
    fetchOk(MODEL_DIR + 'model.safetensors', 'bytes'),
    fetchOk(MODEL_DIR + 'tokenizer.json', 'text'),
  ]);
  demo.generator = await Generator.load(config, weights, tokenizer);
  const i = demo.generator.info();
  $('gen-model').textContent =
    `Model: character-level GPT trained with the wgformer CLI on tiny Shakespeare — ` +
    `${i.n_layer} layers, ${i.n_head} heads, ${i.n_embd} channels, context ${i.n_positions}, ` +
    `${(i.parameters / 1e6).toFixed(2)}M parameters.`;
}

// Generate with the page's controls (or `opts`), streaming into the output box.
demo.generate = async (opts = {}) => {
  const o = {
    prompt: $('gen-prompt').value,
    maxTokens: Number($('gen-max').value),
    temperature: Number($('gen-temp').value),
    topK: Number($('gen-topk').value),
    seed: Number($('gen-seed').value),
    ...opts,
  };
  const out = $('gen-output');
  out.textContent = o.prompt;
  $('gen-run').disabled = true;
  $('gen-speed').textContent = 'Generating…';
  try {
    const r = await demo.generator.generate(o.prompt, o.maxTokens, o.temperature, o.topK, o.seed,
      (text) => { out.textContent += text; });
    demo.lastGenerate = r;
    $('gen-speed').textContent =
      `${r.ids.length} tokens: prefill of ${r.prompt_tokens} tokens in ${r.prefill_ms.toFixed(0)} ms, ` +
      `then ${r.decode_tokens_per_s.toFixed(1)} tokens/s`;
    return r;
  } catch (e) {
    $('gen-speed').textContent = `Error: ${e.message || e}`;
    throw e;
  } finally {
    $('gen-run').disabled = false;
  }
};

demo.firstLogits = (prompt) => demo.generator.firstLogits(prompt);

// ---- Train ------------------------------------------------------------------------------

let stopRequested = false;

function drawChart() {
  const c = $('train-chart');
  const g = c.getContext('2d');
  const [w, h, pad] = [c.width, c.height, 36];
  g.clearRect(0, 0, w, h);
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#5f6b73';
  g.strokeStyle = '#d6dde2';
  g.strokeRect(pad, 8, w - pad - 8, h - pad - 8);
  const pts = demo.losses;
  if (pts.length === 0) {
    g.fillText('training loss will appear here', pad + 10, h / 2);
    return;
  }
  const maxStep = Math.max(pts[pts.length - 1][0], 10);
  const ys = pts.map((p) => p[1]);
  const [lo, hi] = [Math.min(...ys) * 0.95, Math.max(...ys) * 1.02];
  const x = (s) => pad + ((w - pad - 8) * s) / maxStep;
  const y = (l) => 8 + ((h - pad - 8) * (hi - l)) / Math.max(hi - lo, 1e-6);
  g.fillText(hi.toFixed(2), 2, 18);
  g.fillText(lo.toFixed(2), 2, h - pad);
  g.fillText('step ' + maxStep, w - 70, h - 12);
  g.fillText('loss', 2, h / 2);
  g.strokeStyle = '#2f6fab';
  g.lineWidth = 1.5;
  g.beginPath();
  pts.forEach(([s, l], i) => (i ? g.lineTo(x(s), y(l)) : g.moveTo(x(s), y(l))));
  g.stroke();
}

// Train `steps` steps (a fresh model on the first call), charting each loss.
demo.train = async (steps = Number($('train-steps').value)) => {
  $('train-run').disabled = true;
  $('train-stop').disabled = false;
  stopRequested = false;
  try {
    if (!demo.trainer) {
      $('train-progress').textContent = 'Building the model…';
      const lr = Number($('train-lr').value);
      demo.trainer = await Trainer.create($('train-text').value, JSON.stringify({ lr }));
    }
    const t0 = performance.now();
    for (let i = 0; i < steps && !stopRequested; i++) {
      const loss = await demo.trainer.step();
      demo.losses.push([demo.trainer.steps(), loss]);
      drawChart();
      const secs = (performance.now() - t0) / 1000;
      $('train-progress').textContent =
        `step ${demo.trainer.steps()}, loss ${loss.toFixed(3)}, ` +
        `${((i + 1) / secs).toFixed(1)} steps/s (${demo.trainer.parameters()} parameters)`;
    }
    $('train-sample').disabled = false;
    return demo.losses.map((p) => p[1]);
  } catch (e) {
    $('train-progress').textContent = `Error: ${e.message || e}`;
    throw e;
  } finally {
    $('train-run').disabled = false;
    $('train-stop').disabled = true;
  }
};

demo.sample = async () => {
  const r = await demo.trainer.sample('\n', 200, 0.8, demo.losses.length);
  $('train-output').textContent = r.text;
  return r;
};

// ---- Start ------------------------------------------------------------------------------

async function start() {
  drawChart();
  try {
    await init();
  } catch (e) {
    demo.error = `the WebAssembly module did not load: ${e.message || e}`;
    setStatus(`Error: ${demo.error} (was the page built with scripts/build-web?)`, 'error');
    return;
  }
  if (!navigator.gpu) {
    demo.error = 'this browser has no WebGPU (navigator.gpu is missing)';
    setStatus(`Error: ${demo.error}.`, 'error');
    $('status-help').hidden = false;
    return;
  }
  try {
    demo.adapter = await adapterInfo();
  } catch (e) {
    // The library's message is written for the native CLI (it suggests Mesa's drivers);
    // here the help below says what to do, and the message goes to the console.
    demo.error = `no WebGPU adapter: ${e.message || e}`;
    console.warn(demo.error);
    setStatus('Error: no WebGPU adapter.', 'error');
    $('status-help').hidden = false;
    return;
  }
  // The browser names its adapter in GPUAdapter.info (wgpu's name is empty there).
  if (!demo.adapter.name) {
    const a = await navigator.gpu.requestAdapter();
    const i = a && a.info;
    demo.adapter.name = i ? [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') : '';
  }
  setStatus(`Running on ${demo.adapter.name || 'an unnamed adapter'} through WebGPU.`);
  showLimits(demo.adapter);
  $('train-text').value = (await fetchOk(TRAIN_TEXT, 'text')).slice(0, TRAIN_TEXT_CHARS);
  $('train-run').disabled = false;
  try {
    await loadModel();
    $('gen-run').disabled = false;
  } catch (e) {
    $('gen-model').textContent = `Error loading the model: ${e.message || e}`;
    $('gen-model').className = 'error';
  }
}

$('gen-run').addEventListener('click', () => demo.generate().catch(() => {}));
$('train-run').addEventListener('click', () => demo.train().catch(() => {}));
$('train-stop').addEventListener('click', () => { stopRequested = true; });
$('train-sample').addEventListener('click', () => demo.sample().catch((e) => {
  $('train-output').textContent = `Error: ${e.message || e}`;
}));

demo.ready = start();
