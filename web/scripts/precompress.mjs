// Writes a gzip sibling (`x.js.gz`) of every text file of the export, which
// the platform's file responses send to clients that accept gzip: phones on
// mobile data get a third of the bytes, with no compression work per request.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const out = path.join(path.dirname(path.dirname(fileURLToPath(import.meta.url))), "out");
const TEXT = /\.(js|css|html|txt|json|svg|map)$/;

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) walk(full);
    else if (TEXT.test(name)) writeFileSync(`${full}.gz`, gzipSync(readFileSync(full), { level: 9 }));
  }
}

walk(out);
