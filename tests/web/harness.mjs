// Headless-Chromium WebGPU harness for wgformer's browser test.
//
//   node tests/web/harness.mjs --probe   serve tests/web, open probe.html, print window.probeResult
//
// Exports serve() (tiny static HTTP server on 127.0.0.1), launchBrowser() (Debian's
// /usr/bin/chromium through playwright-core, with WebGPU on SwiftShader) and WEBGPU_FLAGS.
// Run scripts/ensure-browser first on a fresh machine.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { createRequire } from "node:module";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CHROMIUM_PATH = process.env.WGFORMER_CHROMIUM || "/usr/bin/chromium";

// Chromium flags with which headless Debian chromium (no GPU, run as root) exposes a
// WebGPU adapter backed by the SwiftShader Vulkan ICD it ships in /usr/lib/chromium
// (libvk_swiftshader.so + vk_swiftshader_icd.json). Headless mode itself comes from
// playwright's `headless: true` (Chromium >= 132: the new headless, same GPU stack).
export const WEBGPU_FLAGS = [
  // Required. Without it Chromium on Linux with no allowlisted GPU exposes no adapter
  // ("No available adapters."): SwiftShader is a fallback (CPU) adapter, which Dawn
  // only offers when unsafe WebGPU is enabled. --ignore-gpu-blocklist,
  // --enable-features=Vulkan or --use-webgpu-adapter=swiftshader alone do not help.
  "--enable-unsafe-webgpu",
  // Pin Dawn to SwiftShader so every host (real GPU, Mesa lavapipe, nothing) gets the
  // same adapter, features and limits. Not needed on a GPU-less host, but makes runs
  // reproducible.
  "--use-webgpu-adapter=swiftshader",
  // Chromium refuses to start as root with its sandbox on. playwright already adds it
  // (chromiumSandbox defaults to false); listed for use outside playwright.
  "--no-sandbox",
];

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8",
  ".wgsl": "text/plain; charset=utf-8",
  ".safetensors": "application/octet-stream",
  ".bin": "application/octet-stream",
};

// Resolve a URL path against the routes (longest prefix wins); null when unmapped or
// when the path would leave the mapped directory.
function resolveRoute(table, pathname) {
  for (const [prefix, dir] of table) {
    if (!pathname.startsWith(prefix)) continue;
    const rest = pathname.slice(prefix.length);
    const file = path.resolve(dir, "." + path.posix.sep + rest);
    if (file !== dir && !file.startsWith(dir + path.sep)) return null;
    return file;
  }
  return null;
}

/**
 * Serve static files on 127.0.0.1 with an ephemeral port.
 * @param {string} rootDir directory served at "/" (unless routes maps "/" itself)
 * @param {Record<string,string>} [routes] URL prefix -> directory, e.g. {"/pkg/": "target/web/pkg"}
 * @param {{crossOriginIsolated?: boolean}} [opts] send COOP/COEP headers (SharedArrayBuffer,
 *   finer performance.now()); off by default since COEP blocks cross-origin subresources
 * @returns {Promise<{url: string, port: number, close: () => Promise<void>}>}
 */
export async function serve(rootDir, routes = {}, opts = {}) {
  const map = { ...(rootDir ? { "/": rootDir } : {}), ...routes };
  const table = Object.entries(map)
    .map(([prefix, dir]) => {
      let p = prefix.startsWith("/") ? prefix : "/" + prefix;
      if (!p.endsWith("/")) p += "/";
      return [p, path.resolve(dir)];
    })
    .sort((a, b) => b[0].length - a[0].length);
  if (table.length === 0) throw new Error("serve: no directory to serve");

  const server = http.createServer((req, res) => {
    const send = (code, msg) => {
      res.writeHead(code, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : msg + "\n");
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "method not allowed");
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url, "http://127.0.0.1").pathname);
    } catch {
      return send(400, "bad request");
    }
    if (pathname.includes("\0")) return send(400, "bad request");
    let file = resolveRoute(table, pathname);
    if (!file) return send(404, "not found");
    fs.stat(file, (err, st) => {
      if (!err && st.isDirectory()) {
        file = path.join(file, "index.html");
        try { st = fs.statSync(file); err = null; } catch (e) { err = e; }
      }
      if (err || !st.isFile()) return send(404, "not found");
      const type = MIME[path.extname(file).toLowerCase()];
      if (!type) return send(404, "not found (unknown file type)");
      const headers = { "content-type": type, "content-length": st.size, "cache-control": "no-store" };
      if (opts.crossOriginIsolated) {
        headers["cross-origin-opener-policy"] = "same-origin";
        headers["cross-origin-embedder-policy"] = "require-corp";
      }
      res.writeHead(200, headers);
      if (req.method === "HEAD") return res.end();
      fs.createReadStream(file).on("error", () => res.destroy()).pipe(res);
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

async function loadPlaywright() {
  try {
    const require = createRequire(path.join(HERE, "package.json"));
    return require("playwright-core");
  } catch (e) {
    throw new Error(
      `playwright-core is not installed in ${HERE}/node_modules; run scripts/ensure-browser (cause: ${e.message})`,
    );
  }
}

/**
 * Launch headless Debian chromium with WebGPU on SwiftShader.
 * @param {{args?: string[], headless?: boolean}} [opts] extra flags appended to WEBGPU_FLAGS
 */
export async function launchBrowser(opts = {}) {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`${CHROMIUM_PATH} not found: Chromium is not installed; run scripts/ensure-browser`);
  }
  const { chromium } = await loadPlaywright();
  const extra = (process.env.WGFORMER_CHROMIUM_ARGS || "").split(/\s+/).filter(Boolean);
  try {
    return await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: opts.headless ?? true,
      // opts.webgpu === false: a browser without WebGPU (the page must say what to do).
      args: [...(opts.webgpu === false ? ["--no-sandbox"] : WEBGPU_FLAGS), ...(opts.args || []), ...extra],
    });
  } catch (e) {
    throw new Error(`could not launch ${CHROMIUM_PATH} (try scripts/ensure-browser): ${e.message}`);
  }
}

async function probeMain() {
  const t0 = Date.now();
  const srv = await serve(HERE);
  let browser;
  try {
    browser = await launchBrowser();
    const page = await browser.newPage();
    const logs = [];
    page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
    page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
    await page.goto(`${srv.url}/probe.html`);
    await page.waitForFunction(() => window.probeResult !== undefined, null, { timeout: 60_000 });
    const result = await page.evaluate(() => window.probeResult);
    result.browserVersion = browser.version();
    result.totalMs = Date.now() - t0;
    if (logs.length) result.console = logs;
    console.log(JSON.stringify(result, null, 2));
    if (result.ok && result.computeOk) return 0;
    console.error(`probe failed: ${result.error || "no adapter or compute check failed"}`);
    return 1;
  } catch (e) {
    console.error(`probe failed: ${e.message}`);
    return 1;
  } finally {
    await browser?.close().catch(() => {});
    await srv.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] || "").href) {
  const args = process.argv.slice(2);
  if (args.includes("--probe")) {
    process.exitCode = await probeMain();
  } else {
    console.error("usage: node tests/web/harness.mjs --probe");
    process.exitCode = 2;
  }
}
