// Builds the console's two assets into dist/: console.js (uPlot and the chart glue, one
// script) and console.css (uPlot's stylesheet and the console's own). No CDN at runtime.
import { build } from "esbuild";

const common = { bundle: true, minify: true, legalComments: "none", logLevel: "warning" };
await build({ ...common, entryPoints: ["src/console.ts"], outfile: "dist/console.js", format: "iife", target: ["es2019"] });
await build({ ...common, entryPoints: ["src/console.css"], outfile: "dist/console.css" });
console.log("console: dist/console.js and dist/console.css built");
