// Run first by `npm start` and `npm test`: both build network namespaces and iptables rules with the
// system's own tools, and a missing tool otherwise shows up as dozens of unrelated test failures.
// Exits 1 with one message naming everything missing and the apt-get line that installs it.
import { aptLine, missingPrerequisites, packagesOf, readPrerequisites } from "./prerequisites.ts";

const problems: string[] = [];
if (process.getuid?.() !== 0) {
  problems.push("needs root: the demo and the tests create network namespaces and iptables rules (run as root, or with sudo)");
}
const missing = missingPrerequisites(readPrerequisites());
if (missing.length > 0) {
  problems.push(
    `missing ${missing.map((p) => `${p.what} (${p.pkg})`).join(", ")}; install with:\n    ${aptLine(packagesOf(missing))}`,
  );
}
if (problems.length > 0) {
  process.stderr.write(`tproxy preflight: ${problems.join("\ntproxy preflight: ")}\n`);
  process.exit(1);
}
