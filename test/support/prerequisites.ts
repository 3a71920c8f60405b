// The system prerequisites of `npm start` and `npm test`, read from prerequisites.txt (the one list
// that .ci/run, the README and the preflight share).
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";

export const PREREQUISITES_FILE = new URL("./prerequisites.txt", import.meta.url);

export interface Prerequisite {
  /** A command looked up on PATH, or an absolute path that must exist. */
  what: string;
  /** The Debian package that provides it. */
  pkg: string;
}

export function readPrerequisites(text = readFileSync(PREREQUISITES_FILE, "utf8")): Prerequisite[] {
  const out: Prerequisite[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const [what, pkg] = line.split(/\s+/);
    if (!what || !pkg) throw new Error(`prerequisites.txt:${i + 1}: "${line}" needs a command and a Debian package`);
    out.push({ what, pkg });
  });
  return out;
}

/** Each package once, in the order the list first names it (the order .ci/run installs them in). */
export function packagesOf(list: Prerequisite[]): string[] {
  return [...new Set(list.map((p) => p.pkg))];
}

/** The apt-get line the README quotes and the preflight prints. */
export function aptLine(pkgs: string[]): string {
  return `apt-get install -y ${pkgs.join(" ")}`;
}

function onPath(cmd: string, path: string): boolean {
  for (const dir of path.split(delimiter)) {
    if (dir === "") continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {
      // not in this folder
    }
  }
  return false;
}

export function missingPrerequisites(list: Prerequisite[], path = process.env["PATH"] ?? ""): Prerequisite[] {
  return list.filter((p) => (isAbsolute(p.what) ? !existsSync(p.what) : !onPath(p.what, path)));
}
