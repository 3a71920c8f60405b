// Writes a directory the way the kubelet updates a ConfigMap volume (its AtomicWriter): each version in
// a new timestamped directory, a `..data` symlink swapped atomically by renaming `..data_tmp`, and one
// `<key> -> ..data/<key>` symlink per key; the old version's directory is removed afterwards.
import { mkdirSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync, existsSync, lstatSync } from "node:fs";
import { join } from "node:path";

let generation = 0;

export function writeConfigMap(dir: string, files: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  generation += 1;
  const stamp = new Date().toISOString().replace(/[-:T.Z]/g, "_");
  const versionDir = `..${stamp}${process.pid}_${generation}`;
  mkdirSync(join(dir, versionDir));
  for (const [key, content] of Object.entries(files)) writeFileSync(join(dir, versionDir, key), content);
  const dataLink = join(dir, "..data");
  const previous = existsSync(dataLink) ? readlinkSync(dataLink) : undefined;
  const tmp = join(dir, "..data_tmp");
  rmSync(tmp, { force: true });
  symlinkSync(versionDir, tmp);
  renameSync(tmp, dataLink);
  for (const key of Object.keys(files)) {
    const link = join(dir, key);
    let present = false;
    try {
      present = lstatSync(link).isSymbolicLink();
    } catch {
      present = false;
    }
    if (!present) symlinkSync(join("..data", key), link);
  }
  if (previous !== undefined && previous !== versionDir) rmSync(join(dir, previous), { recursive: true, force: true });
}
