// Builds the static export when it is missing or older than its sources
// (and installs the pinned dependencies first when they are missing).
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const SOURCES = ["app", "components", "lib", "public", "package.json", "package-lock.json", "next.config.ts", "tsconfig.json"];

function newest(entry) {
  const full = path.join(root, entry);
  if (!existsSync(full)) return 0;
  const stat = statSync(full);
  if (!stat.isDirectory()) return stat.mtimeMs;
  return Math.max(stat.mtimeMs, ...readdirSync(full).map((name) => newest(path.join(entry, name))));
}

const built = path.join(root, "out", "index.html");
const run = (...args) => execFileSync("npm", args, { cwd: root, stdio: "inherit" });
if (!existsSync(path.join(root, "node_modules", ".package-lock.json"))) run("ci", "--no-audit", "--no-fund");
const stale = !existsSync(built) || Math.max(...SOURCES.map(newest)) > statSync(built).mtimeMs;
if (stale) run("run", "build");
else console.log("web client is up to date:", path.join(root, "out"));
