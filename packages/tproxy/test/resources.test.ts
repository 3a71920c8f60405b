// The container's CPU and memory limits as the kernel enforces them, read from fake cgroup v1 and v2
// trees (every layout the module must handle), then from real cgroups this test creates (v1 or v2,
// whichever the machine mounts) with a child node process inside; and the worker plan built on them.
import { expect } from "chai";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { run } from "../../../test/support/netns.ts";
import {
  BASE_MIB, PER_CONNECTION_KIB, PER_WORKER_MIB, RESERVE_CONNECTIONS, cpuLimit, cpusAvailable, interpretMemoryLimit,
  memoryLimit, parseMountinfo, parseProcCgroup, planWorkers, connectionCapacity,
} from "../src/resources.ts";

const MIB = 1024 * 1024;
const REPO_ROOT = resolve(import.meta.dirname, "../../..");
const SOURCE = resolve(import.meta.dirname, "../src/resources.ts");

/** A fake root: /proc/self/cgroup, /proc/self/mountinfo and the files given (paths from the root). */
function fakeRoot(parent: string, procCgroup: string, mountinfo: string, files: Record<string, string>): string {
  const root = mkdtempSync(join(parent, "root-"));
  const all = { "/proc/self/cgroup": procCgroup, "/proc/self/mountinfo": mountinfo, ...files };
  for (const [path, text] of Object.entries(all)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

// mountinfo lines as a kubelet-run container sees them.
const V2_MOUNT = "35 28 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
const v1Mount = (mountPoint: string, controllers: string, root = "/") =>
  `41 31 0:37 ${root} ${mountPoint} rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,${controllers}\n`;
const OTHER_MOUNTS = "22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n";

describe("resources: the container's limits and the worker plan", function () {
  this.timeout(30_000);
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), "tproxy-resources-"));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  describe("parsing /proc/self/cgroup and /proc/self/mountinfo", () => {
    it("reads v1 controller lists and the v2 line", () => {
      expect(parseProcCgroup("12:cpu,cpuacct:/kubepods/pod1\n4:memory:/a b\n0::/x\n")).to.deep.equal([
        { hierarchy: "12", controllers: ["cpu", "cpuacct"], path: "/kubepods/pod1" },
        { hierarchy: "4", controllers: ["memory"], path: "/a b" },
        { hierarchy: "0", controllers: [], path: "/x" },
      ]);
    });

    it("keeps cgroup mounts only, with their root, unescaped mount point and v1 controllers", () => {
      const mounts = parseMountinfo(OTHER_MOUNTS + V2_MOUNT + v1Mount("/sys/fs/cgroup/cpu\\040x", "cpu,cpuacct", "/kubepods"));
      expect(mounts).to.deep.equal([
        { root: "/", mountPoint: "/sys/fs/cgroup", version: 2, controllers: [] },
        { root: "/kubepods", mountPoint: "/sys/fs/cgroup/cpu x", version: 1, controllers: ["rw", "cpu", "cpuacct"] },
      ]);
    });
  });

  describe("cgroup v2 (cpu.max, memory.max)", () => {
    const cg = "0::/kubepods/pod1/c1\n";
    const leaf = "/sys/fs/cgroup/kubepods/pod1/c1";

    it("reads the container's CPU quota in cores and its memory limit in bytes", () => {
      const root = fakeRoot(tmp, cg, V2_MOUNT, { [`${leaf}/cpu.max`]: "150000 100000\n", [`${leaf}/memory.max`]: "314572800\n" });
      expect(cpuLimit(root)).to.equal(1.5);
      expect(memoryLimit(root)).to.equal(300 * MIB);
    });

    it("says unlimited for max everywhere", () => {
      const root = fakeRoot(tmp, cg, V2_MOUNT, {
        [`${leaf}/cpu.max`]: "max 100000\n",
        [`${leaf}/memory.max`]: "max\n",
        "/sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/kubepods/pod1/memory.max": "max\n",
      });
      expect(cpuLimit(root)).to.equal(undefined);
      expect(memoryLimit(root)).to.equal(undefined);
    });

    it("takes a parent's smaller limit (the pod's), walking up to the mount root", () => {
      const root = fakeRoot(tmp, cg, V2_MOUNT, {
        [`${leaf}/cpu.max`]: "400000 100000\n",
        [`${leaf}/memory.max`]: "max\n",
        "/sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/kubepods/pod1/memory.max": String(200 * MIB),
        "/sys/fs/cgroup/kubepods/cpu.max": "50000 100000\n",
        "/sys/fs/cgroup/kubepods/memory.max": String(400 * MIB),
      });
      expect(cpuLimit(root)).to.equal(0.5);
      expect(memoryLimit(root)).to.equal(200 * MIB);
    });

    it("reads the mount root's files when the path is not in the mount (cgroup namespace, or / itself)", () => {
      for (const line of [cg, "0::/\n"]) {
        const root = fakeRoot(tmp, line, V2_MOUNT, { "/sys/fs/cgroup/cpu.max": "250000 100000\n", "/sys/fs/cgroup/memory.max": String(128 * MIB) });
        expect(cpuLimit(root), line).to.equal(2.5);
        expect(memoryLimit(root), line).to.equal(128 * MIB);
      }
    });

    it("reads the mount root's files for a path outside the namespace (`/../..`), and not a child that shares the host path's name", () => {
      // Joined naively, that path leads out of the mount to /sys/kubepods/pod2/c1: never read there.
      const outside = fakeRoot(tmp, "0::/../../kubepods/pod2/c1\n", V2_MOUNT, { "/sys/fs/cgroup/cpu.max": "50000 100000\n", "/sys/kubepods/pod2/c1/cpu.max": "10000 100000\n" });
      expect(cpuLimit(outside)).to.equal(0.5);
      // The mount shows the container's own cgroup; a sub-cgroup named like the first host path segment is a child, not a parent.
      const child = fakeRoot(tmp, cg, V2_MOUNT, { "/sys/fs/cgroup/cpu.max": "300000 100000\n", "/sys/fs/cgroup/kubepods/cpu.max": "10000 100000\n" });
      expect(cpuLimit(child)).to.equal(3);
    });

    it("says unlimited when nothing is mounted or /proc is missing", () => {
      expect(cpuLimit(fakeRoot(tmp, cg, OTHER_MOUNTS, { [`${leaf}/cpu.max`]: "100000 100000" }))).to.equal(undefined);
      expect(cpuLimit(join(tmp, "no-such-root"))).to.equal(undefined);
      expect(memoryLimit(join(tmp, "no-such-root"))).to.equal(undefined);
    });
  });

  describe("cgroup v1 (cpu.cfs_quota_us and cpu.cfs_period_us, memory.limit_in_bytes)", () => {
    const cg = "11:memory:/kubepods/pod1/c1\n4:cpu,cpuacct:/kubepods/pod1/c1\n1:name=systemd:/kubepods/pod1/c1\n0::/\n";
    // Mounted where the mountinfo says, not at /sys/fs/cgroup/cpu: the module must not guess.
    const mounts = OTHER_MOUNTS + v1Mount("/cg/cpu,cpuacct", "cpu,cpuacct") + v1Mount("/cg/memory", "memory") + "40 31 0:38 / /cg/unified rw - cgroup2 cgroup2 rw\n";
    const cpuLeaf = "/cg/cpu,cpuacct/kubepods/pod1/c1";
    const memLeaf = "/cg/memory/kubepods/pod1/c1";
    const v1Unlimited = "9223372036854771712\n";

    it("reads the quota over the period in cores and the memory limit, from the mounts mountinfo names", () => {
      const root = fakeRoot(tmp, cg, mounts, {
        [`${cpuLeaf}/cpu.cfs_quota_us`]: "150000\n",
        [`${cpuLeaf}/cpu.cfs_period_us`]: "100000\n",
        [`${memLeaf}/memory.limit_in_bytes`]: "314572800\n",
        // A hybrid host: the v2 tree has no cpu controller here; v1 decides.
        "/cg/unified/cpu.max": "10000 100000\n",
      });
      expect(cpuLimit(root)).to.equal(1.5);
      expect(memoryLimit(root)).to.equal(300 * MIB);
    });

    it("says unlimited for a quota of -1 and the kernel's no-limit memory value", () => {
      const root = fakeRoot(tmp, cg, mounts, {
        [`${cpuLeaf}/cpu.cfs_quota_us`]: "-1\n",
        [`${cpuLeaf}/cpu.cfs_period_us`]: "100000\n",
        [`${memLeaf}/memory.limit_in_bytes`]: v1Unlimited,
        "/cg/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/cg/memory/memory.limit_in_bytes": v1Unlimited,
      });
      expect(cpuLimit(root)).to.equal(undefined);
      expect(memoryLimit(root)).to.equal(undefined);
    });

    it("takes a parent's smaller limit, each level with its own period", () => {
      const root = fakeRoot(tmp, cg, mounts, {
        [`${cpuLeaf}/cpu.cfs_quota_us`]: "-1\n",
        [`${cpuLeaf}/cpu.cfs_period_us`]: "100000\n",
        "/cg/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "300000\n",
        "/cg/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "200000\n",
        "/cg/cpu,cpuacct/kubepods/cpu.cfs_quota_us": "400000\n",
        "/cg/cpu,cpuacct/kubepods/cpu.cfs_period_us": "100000\n",
        [`${memLeaf}/memory.limit_in_bytes`]: v1Unlimited,
        "/cg/memory/kubepods/pod1/memory.limit_in_bytes": String(256 * MIB),
      });
      expect(cpuLimit(root)).to.equal(1.5);
      expect(memoryLimit(root)).to.equal(256 * MIB);
    });

    it("reads the mount root's files when the path is not in the mount (the container's own cgroup mounted as root)", () => {
      const root = fakeRoot(tmp, cg, mounts, {
        "/cg/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
        "/cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/cg/memory/memory.limit_in_bytes": String(64 * MIB),
      });
      expect(cpuLimit(root)).to.equal(0.5);
      expect(memoryLimit(root)).to.equal(64 * MIB);
    });

    it("maps the path under a mount whose root is a sub-cgroup (a bind mount of /kubepods)", () => {
      const bound = OTHER_MOUNTS + v1Mount("/sys/fs/cgroup/cpu", "cpu", "/kubepods");
      const root = fakeRoot(tmp, "3:cpu:/kubepods/pod1/c1\n", bound, {
        "/sys/fs/cgroup/cpu/pod1/c1/cpu.cfs_quota_us": "200000\n",
        "/sys/fs/cgroup/cpu/pod1/c1/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
      });
      expect(cpuLimit(root)).to.equal(2);
    });
  });

  describe("cpusAvailable", () => {
    const withQuota = (quota: string) =>
      fakeRoot(tmp, "0::/c\n", V2_MOUNT, { "/sys/fs/cgroup/c/cpu.max": `${quota} 100000\n` });
    it("is the cores, capped by the quota rounded up, at least 1", () => {
      const cores = availableParallelism();
      expect(cpusAvailable(withQuota("max"))).to.equal(cores);
      expect(cpusAvailable(withQuota("150000"))).to.equal(Math.min(cores, 2));
      expect(cpusAvailable(withQuota("10000"))).to.equal(1);
      expect(cpusAvailable(withQuota(String(100000 * (cores + 8))))).to.equal(cores);
    });
  });

  describe("interpretMemoryLimit (what process.constrainedMemory() means)", () => {
    const machine = 16 * 1024 * MIB;
    it("keeps a real limit", () => {
      expect(interpretMemoryLimit(300 * MIB, machine)).to.equal(300 * MIB);
      expect(interpretMemoryLimit(machine, machine)).to.equal(machine);
    });
    it("reads no cgroup (0), the no-limit values and limits above the machine as unlimited", () => {
      for (const v of [0, -1, Number.NaN, 2 ** 60, 9223372036854771712, 2 ** 64, machine + 1]) {
        expect(interpretMemoryLimit(v, machine), String(v)).to.equal(undefined);
      }
      // The no-limit values mean unlimited whatever the machine reports.
      expect(interpretMemoryLimit(2 ** 60, 2 ** 62)).to.equal(undefined);
      expect(interpretMemoryLimit(2 ** 59, 2 ** 62)).to.equal(2 ** 59);
    });
  });

  describe("connectionCapacity (--max-connections auto)", () => {
    const model = { baseMiB: 90, perWorkerMiB: 50, perConnectionKiB: 64 };
    it("is what the limit holds once the base and the threads are paid for, at the cost per connection", () => {
      expect(connectionCapacity(512 * MIB, 2, model)).to.equal(5152); // (512 - 190) MiB / 64 KiB
      expect(connectionCapacity(1024 * MIB, 4, model)).to.equal(Math.floor((1024 - 290) * 16));
    });
    it("is no cap (0) without a memory limit, and at least 100 with one", () => {
      expect(connectionCapacity(undefined, 2, model)).to.equal(0);
      expect(connectionCapacity(150 * MIB, 2, model)).to.equal(100);
    });
  });

  describe("planWorkers", () => {
    const model = { baseMiB: 60, perWorkerMiB: 30, perConnectionKiB: 64, reserveConnections: 1000 }; // fixed: 60 + 62.5 MiB
    it("runs one worker per CPU when the memory limit holds them, naming the numbers", () => {
      const plan = planWorkers({ cpus: 2, cpuLimit: 2, memoryBytes: 512 * MIB, ...model });
      expect(plan).to.deep.equal({ workers: 2, reason: "2 workers: 2 CPUs (CPU limit 2.0), memory limit 512 MiB fits 12", belowMinimum: false });
      expect(planWorkers({ cpus: 4, memoryBytes: undefined, ...model }).reason).to.equal("4 workers: 4 CPUs, no memory limit");
      expect(planWorkers({ cpus: 2, cpuLimit: 1.5, memoryBytes: undefined, ...model }).reason).to.equal("2 workers: 2 CPUs (CPU limit 1.5), no memory limit");
    });

    it("runs fewer workers than CPUs when the memory limit holds fewer", () => {
      const plan = planWorkers({ cpus: 8, memoryBytes: 256 * MIB, ...model });
      expect(plan.workers).to.equal(4); // (256 - 122.5) / 30 = 4.45
      expect(plan.belowMinimum).to.equal(false);
      expect(plan.reason).to.equal("4 workers: 8 CPUs, but the memory limit 256 MiB fits only 4 (60 MiB base + 30 MiB per worker + 1000 connections × 64 KiB)");
    });

    it("counts a limit of exactly base + n workers + reserve as holding n", () => {
      const exact = (60 + 3 * 30) * MIB + 1000 * 64 * 1024;
      expect(planWorkers({ cpus: 8, memoryBytes: exact, ...model }).workers).to.equal(3);
      expect(planWorkers({ cpus: 8, memoryBytes: exact - 1, ...model }).workers).to.equal(2);
    });

    it("still runs 1 worker below the minimum, and says the limit is below the measured minimum", () => {
      const plan = planWorkers({ cpus: 2, memoryBytes: 64 * MIB, ...model });
      expect(plan.workers).to.equal(1);
      expect(plan.belowMinimum).to.equal(true);
      expect(plan.reason).to.include("memory limit 64 MiB is below the measured minimum of about 153 MiB for one worker");
      expect(planWorkers({ cpus: 2, memoryBytes: (60 + 30) * MIB + 1000 * 64 * 1024, ...model }).belowMinimum).to.equal(false);
    });

    it("defaults to the measured constants and never plans fewer than 1 worker", () => {
      const fixed = BASE_MIB * MIB + RESERVE_CONNECTIONS * PER_CONNECTION_KIB * 1024;
      expect(planWorkers({ cpus: 64, memoryBytes: fixed + 5 * PER_WORKER_MIB * MIB }).workers).to.equal(5);
      expect(planWorkers({ cpus: 0, memoryBytes: undefined }).workers).to.equal(1);
    });
  });

  // ---- real cgroups: a node process moved into cgroups this test makes, reading its own limits ----
  describe("in real cgroups (v1 or v2, as mounted here)", () => {
    interface Reading { cpu: number | null; memory: number | null; constrainedMemory: number }
    const NODE = join(REPO_ROOT, "node_modules/.bin/node");
    const name = `tproxy-resources-${process.pid}`;
    /** Directories to remove after, deepest first. */
    const made: string[] = [];
    let layout: { version: 1 | 2; memoryMount: string; cpuMount: string } | undefined;

    before(function () {
      if (existsSync("/sys/fs/cgroup/cgroup.controllers")) {
        try {
          // Children of the root get the controllers only when the root hands them down.
          writeFileSync("/sys/fs/cgroup/cgroup.subtree_control", "+cpu +memory");
        } catch (err) {
          console.log(`      skipped: cgroup v2 is mounted but the cpu and memory controllers cannot be enabled for child cgroups (${(err as Error).message})`);
          this.skip();
        }
        layout = { version: 2, memoryMount: "/sys/fs/cgroup", cpuMount: "/sys/fs/cgroup" };
      } else {
        const mounts = parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8")).filter((m) => m.version === 1);
        const memory = mounts.find((m) => m.controllers.includes("memory"));
        const cpu = mounts.find((m) => m.controllers.includes("cpu"));
        if (memory === undefined || cpu === undefined) {
          console.log("      skipped: neither cgroup v2 (/sys/fs/cgroup/cgroup.controllers) nor the v1 memory and cpu controllers are mounted");
          this.skip();
        }
        layout = { version: 1, memoryMount: memory.mountPoint, cpuMount: cpu.mountPoint };
      }
      try {
        cgroup("");
      } catch (err) {
        console.log(`      skipped: cannot create a cgroup under ${layout.memoryMount} and ${layout.cpuMount} (${(err as Error).message}); run as root`);
        this.skip();
      }
    });

    after(() => {
      for (const dir of made.reverse()) {
        try {
          rmdirSync(dir);
        } catch (err) {
          console.log(`      could not remove cgroup ${dir}: ${(err as Error).message}`);
        }
      }
    });

    /** Makes cgroup `rel` under this test's own cgroup in every hierarchy the layout uses, level by level (each removed after). */
    function cgroup(rel: string): { memory: string; cpu: string } {
      const make = (mount: string): string => {
        let dir = mount;
        for (const part of [name, ...rel.split("/").filter((p) => p !== "")]) {
          dir = join(dir, part);
          if (!existsSync(dir)) {
            mkdirSync(dir);
            made.push(dir);
          }
        }
        return dir;
      };
      return { memory: make(layout!.memoryMount), cpu: make(layout!.cpuMount) };
    }

    function limit(dirs: { memory: string; cpu: string }, memoryBytes: number, quotaUs: number, periodUs: number): void {
      if (layout!.version === 2) {
        writeFileSync(join(dirs.memory, "memory.max"), String(memoryBytes));
        writeFileSync(join(dirs.cpu, "cpu.max"), `${quotaUs} ${periodUs}`);
      } else {
        writeFileSync(join(dirs.memory, "memory.limit_in_bytes"), String(memoryBytes));
        writeFileSync(join(dirs.cpu, "cpu.cfs_period_us"), String(periodUs));
        writeFileSync(join(dirs.cpu, "cpu.cfs_quota_us"), String(quotaUs));
      }
    }

    /** Node, moved into `dirs` by its shell before exec, prints what the module reads. */
    async function readInside(dirs: { memory: string; cpu: string }): Promise<Reading> {
      const script = `import { cpuLimit, memoryLimit } from ${JSON.stringify(pathToFileURL(SOURCE).href)};
        console.log(JSON.stringify({ cpu: cpuLimit() ?? null, memory: memoryLimit() ?? null, constrainedMemory: process.constrainedMemory() }));`;
      const procs = [...new Set([dirs.memory, dirs.cpu])].map((d) => `echo $$ > '${d}/cgroup.procs'`).join(" && ");
      const r = await run("sh", ["-c", `${procs} && exec "$0" --input-type=module -e "$1"`, NODE, script]);
      expect(r.code, r.stderr).to.equal(0);
      return JSON.parse(r.stdout) as Reading;
    }

    it("reads 300 MiB and 1.5 CPUs inside a cgroup with those limits, and unlimited in a cgroup without (control)", async () => {
      const limited = cgroup("limited");
      limit(limited, 300 * MIB, 150000, 100000);
      const inside = await readInside(limited);
      expect(inside.memory).to.equal(314572800);
      expect(inside.cpu).to.equal(1.5);
      // The same child, same way, in a cgroup without limits under the unlimited root.
      const control = await readInside(cgroup("control"));
      expect(control).to.include({ cpu: null, memory: null });
      expect(totalmem()).to.be.greaterThan(300 * MIB);
    });

    it("reads the parent's limits from a child cgroup without its own", async () => {
      const outer = cgroup("outer");
      limit(outer, 300 * MIB, 150000, 100000);
      const inner = cgroup("outer/inner");
      const inside = await readInside(inner);
      expect(inside.cpu).to.equal(1.5);
      expect(inside.memory).to.equal(314572800);
      console.log(`      (process.constrainedMemory() in the child cgroup said ${inside.constrainedMemory}; cgroup v${layout!.version})`);
    });
  });
});
