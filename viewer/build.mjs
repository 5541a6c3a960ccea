// Builds each page into one self-contained HTML file: its script bundled (no CDN, no imports at run
// time), its style and script inlined. The outputs are committed; `npm ci && npm run build` remakes
// them byte for byte from package-lock.json.
import { readFileSync, writeFileSync } from "node:fs";
import { build } from "esbuild";

// zod exports all its ~60 message locales through one module; the pages use English only (zod's
// default), and the others would be four tenths of each page.
const englishOnly = {
  name: "zod-english-only",
  setup(build) {
    build.onResolve({ filter: /\/locales\/index\.js$/ }, (args) =>
      args.importer.includes("/zod/") ? { path: new URL("src/zod-locales.js", import.meta.url).pathname } : undefined,
    );
  },
};

const pages = [
  { source: "src/viewer", output: "../core/src/fal_mcp/viewer.html" },
  { source: "src/test-host", output: "../tests/apps/host.html" },
];

for (const page of pages) {
  const bundled = await build({
    entryPoints: [`${page.source}.js`],
    bundle: true,
    minify: true,
    format: "iife",
    target: "es2022",
    legalComments: "none",
    plugins: [englishOnly],
    write: false,
  });
  // "</script" inside the script would end the inline element early.
  const script = bundled.outputFiles[0].text.replaceAll("</script", "<\\/script");
  const html = readFileSync(`${page.source}.html`, "utf8")
    .replace("/*STYLE*/", () => readFileSync(`${page.source}.css`, "utf8"))
    .replace("/*SCRIPT*/", () => script);
  writeFileSync(page.output, html);
  console.log(`${page.output}: ${html.length} bytes`);
}
