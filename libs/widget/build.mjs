// Builds the two bundles and reports their gzipped sizes; fails over the budget.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const BUDGET_GZIP_BYTES = 15 * 1024;
const common = { bundle: true, minify: true, target: ["es2019"], legalComments: "none", logLevel: "warning" };

await build({ ...common, entryPoints: ["src/script.ts"], outfile: "dist/feedbackloop.js", format: "iife" });
await build({ ...common, entryPoints: ["src/index.ts"], outfile: "dist/feedbackloop.mjs", format: "esm" });

const report = {};
for (const file of ["feedbackloop.js", "feedbackloop.mjs"]) {
  const bytes = readFileSync(`dist/${file}`);
  report[file] = {
    bytes: bytes.length,
    gzip_bytes: gzipSync(bytes, { level: 9 }).length,
    integrity: "sha384-" + createHash("sha384").update(bytes).digest("base64"),
  };
}
writeFileSync("dist/size.json", JSON.stringify({ budget_gzip_bytes: BUDGET_GZIP_BYTES, files: report }, null, 2) + "\n");
for (const [file, size] of Object.entries(report)) {
  console.log(`widget: dist/${file} ${size.bytes} bytes, ${size.gzip_bytes} bytes gzipped (budget: ${BUDGET_GZIP_BYTES} gzipped)`);
  if (size.gzip_bytes > BUDGET_GZIP_BYTES) {
    console.error(`widget: dist/${file} is over the ${BUDGET_GZIP_BYTES}-byte gzipped budget`);
    process.exit(1);
  }
}
