// Lighthouse (mobile) on the discover and chat screens of a running
// platform, signed in as the accounts the browser tests left in
// test-results/lighthouse-accounts.json; Debian's Chromium, no download.
// Usage: UNIMATCH_BASE_URL=http://127.0.0.1:8080 npm run lighthouse
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { gzipSync } from "node:zlib";

import lighthouse from "lighthouse";
import { chromium } from "playwright-core";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const base = process.env.UNIMATCH_BASE_URL ?? "http://127.0.0.1:8080";
const executablePath = process.env.CHROME_PATH ?? process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const results = path.join(root, "test-results");
const accounts = JSON.parse(await readFile(path.join(results, "lighthouse-accounts.json"), "utf8"));

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function login({ email, password }) {
  const response = await fetch(`${base}/api/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) throw new Error(`login ${email}: ${response.status}`);
  const { access, refresh } = await response.json();
  return { access, refresh };
}

async function measure(name, account, route) {
  const port = await freePort();
  const profile = await mkdtemp(path.join(tmpdir(), "unimatch-lh-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [
      `--remote-debugging-port=${port}`,
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-dev-shm-usage",
    ],
  });
  try {
    const tokens = await login(account);
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`${base}/login`);
    await page.evaluate((t) => localStorage.setItem("unimatch.session", JSON.stringify(t)), tokens);
    const url = `${base}${route}`;
    const result = await lighthouse(
      url,
      { port, output: "html", logLevel: "error", disableStorageReset: true, onlyCategories: ["performance", "accessibility"] },
      undefined,
    );
    if (!result) throw new Error(`no Lighthouse result for ${url}`);
    await writeFile(path.join(results, `lighthouse-${name}.html`), result.report);
    const lhr = result.lhr;
    const scripts = (lhr.audits["network-requests"].details?.items ?? []).filter(
      (item) => item.resourceType === "Script" && item.url.startsWith(base),
    );
    const scriptBytes = scripts.reduce((sum, item) => sum + (item.transferSize ?? 0), 0);
    return {
      screen: name,
      url: route,
      performance: Math.round(lhr.categories.performance.score * 100),
      accessibility: Math.round(lhr.categories.accessibility.score * 100),
      lcp_ms: Math.round(lhr.audits["largest-contentful-paint"].numericValue),
      tbt_ms: Math.round(lhr.audits["total-blocking-time"].numericValue),
      cls: Number(lhr.audits["cumulative-layout-shift"].numericValue.toFixed(3)),
      scripts_requested: scripts.length,
      script_bytes_transferred: scriptBytes,
    };
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
}

/** The JavaScript a page loads (its <script src> chunks, not the noModule
 * polyfill modern browsers skip), in KB as gzip -9 sends it. */
async function shippedJs(page) {
  const html = await readFile(path.join(root, "out", `${page}.html`), "utf8");
  const sources = [...html.matchAll(/<script src="([^"]+)"([^>]*)>/g)]
    .filter((m) => !m[2].includes("noModule"))
    .map((m) => m[1]);
  let raw = 0;
  let gzip = 0;
  for (const src of new Set(sources)) {
    const body = await readFile(path.join(root, "out", src));
    raw += body.length;
    gzip += gzipSync(body, { level: 9 }).length;
  }
  return { files: new Set(sources).size, raw_kb: Number((raw / 1024).toFixed(1)), gzip_kb: Number((gzip / 1024).toFixed(1)) };
}

const report = {
  lighthouse: [
    await measure("discover", accounts.discover, "/discover"),
    await measure("chat", accounts.chat, `/chat?m=${accounts.chat.matchId}`),
  ],
  javascript: { chat: await shippedJs("chat"), discover: await shippedJs("discover") },
};
await writeFile(path.join(results, "lighthouse.json"), JSON.stringify(report, null, 2));
console.log(JSON.stringify(report, null, 2));
