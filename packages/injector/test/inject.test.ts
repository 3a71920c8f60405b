// inject() and validate(): which pods are locked, what they get, what is refused and why.
import { expect } from "chai";
import { inject, validate, type Container, type InjectResult, type Pod } from "../src/index.ts";
import { CONFIG, LOCKED_NS, appPod } from "./fixtures.ts";

function locked(r: InjectResult): Pod {
  if (!r.allowed) throw new Error(`refused: ${r.message}`);
  return r.pod;
}
function refused(r: InjectResult | { allowed: boolean; message?: string }): string {
  if (r.allowed) throw new Error("allowed, expected a refusal");
  return (r as { message: string }).message;
}
const container = (pod: Pod, name: string): Container => [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers!].find((c) => c.name === name)!;

describe("inject()", () => {
  it("locks every pod of a namespace labelled tproxy.io/lock=enabled: annotation, init container first, volume, mounts, NET_RAW dropped", () => {
    const original = appPod();
    const before = structuredClone(original);
    const pod = locked(inject(original, LOCKED_NS, CONFIG));
    expect(original, "the input is not changed").to.deep.equal(before);
    expect(pod.metadata!.annotations).to.deep.equal({ "initializer.kubernetes.io/tproxy": "true" });
    expect(pod.spec!.initContainers).to.deep.equal([CONFIG.initContainer]);
    expect(pod.spec!.volumes).to.deep.equal([{ name: "data", emptyDir: {} }, CONFIG.volume]);
    expect(container(pod, "app").volumeMounts).to.deep.equal(CONFIG.volumeMounts);
    expect(container(pod, "log").volumeMounts).to.deep.equal([{ name: "data", mountPath: "/data" }, ...CONFIG.volumeMounts]);
    // Merged, never replaced: the app's own settings and drops stay.
    expect(container(pod, "app").securityContext).to.deep.equal({ runAsUser: 1000, capabilities: { drop: ["MKNOD", "NET_RAW"] } });
    expect(container(pod, "log").securityContext).to.deep.equal({ capabilities: { drop: ["NET_RAW"] } });
  });

  it("locks a pod labelled tproxy.io/lock=enabled in any namespace, and one that carries the annotation", () => {
    expect(locked(inject(appPod({ labels: { "tproxy.io/lock": "enabled" } }), {}, CONFIG)).spec!.initContainers![0]).to.deep.equal(CONFIG.initContainer);
    expect(locked(inject(appPod({ annotations: { "initializer.kubernetes.io/tproxy": "true" } }), {}, CONFIG)).spec!.initContainers![0]).to.deep.equal(CONFIG.initContainer);
  });

  it("leaves a pod not to lock unchanged (same object), whatever other labels say", () => {
    for (const [pod, ns] of [
      [appPod(), {}],
      [appPod({ labels: { "tproxy.io/lock": "disabled" } }), {}],
      [appPod(), { "tproxy.io/lock": "disabled" }],
      [appPod({ annotations: { "initializer.kubernetes.io/tproxy": "false" } }), {}],
    ] as const) {
      const r = inject(pod, ns, CONFIG);
      expect(r.allowed).to.equal(true);
      expect((r as { pod: Pod }).pod).to.equal(pod);
    }
  });

  it("is idempotent: a pod it locked, even with the API server's defaults filled in, comes back unchanged (reinvocation)", () => {
    const once = locked(inject(appPod(), LOCKED_NS, CONFIG));
    expect(locked(inject(once, LOCKED_NS, CONFIG))).to.deep.equal(once);
    const defaulted = structuredClone(once);
    Object.assign(defaulted.spec!.initContainers![0]!, { terminationMessagePath: "/dev/termination-log", terminationMessagePolicy: "File" });
    ((defaulted.spec!.initContainers![0]!["env"] as Array<{ valueFrom: { fieldRef: Record<string, string> } }>)[0]!.valueFrom.fieldRef)["apiVersion"] = "v1";
    (defaulted.spec!.volumes![1]!["configMap"] as Record<string, unknown>)["defaultMode"] = 420;
    expect(locked(inject(defaulted, LOCKED_NS, CONFIG))).to.deep.equal(defaulted);
    expect(validate(defaulted, LOCKED_NS, CONFIG)).to.deep.equal({ allowed: true });
  });

  it("puts the lock's init container back first when another webhook added one before it", () => {
    const once = locked(inject(appPod(), LOCKED_NS, CONFIG));
    once.spec!.initContainers!.unshift({ name: "vault-agent-init", image: "vault:1" });
    expect(locked(inject(once, LOCKED_NS, CONFIG)).spec!.initContainers!.map((c) => c.name)).to.deep.equal(["tproxy", "vault-agent-init"]);
  });

  it("refuses a pod whose init container tproxy was tampered with, naming each difference", () => {
    const cases: Array<[string, (c: Container) => void, string]> = [
      ["image", (c) => void (c["image"] = "evil/init:1"), 'image: "evil/init:1" instead of "registry.test/sidecar-init:1"'],
      ["command", (c) => void (c["command"] = ["sh", "-c", "true"]), 'command: ["sh","-c","true"] instead of ["tproxy-sidecar-init"]'],
      ["args", (c) => void (c["args"] = ["--no-wait"]), 'args: ["--no-wait"] added'],
      ["env", (c) => void (c["env"] = []), "env: [] instead of"],
      ["securityContext", (c) => void (c.securityContext!.capabilities!.add = ["NET_ADMIN"]), 'securityContext.capabilities.add: ["NET_ADMIN"] instead of ["NET_ADMIN","NET_RAW"]'],
    ];
    for (const [what, tamper, message] of cases) {
      const pod = locked(inject(appPod(), LOCKED_NS, CONFIG));
      tamper(pod.spec!.initContainers![0]!);
      const m = refused(inject(pod, LOCKED_NS, CONFIG));
      expect(m, what).to.include('init container "tproxy" differs from tproxy\'s').and.include(message);
      expect(m, what).to.include("pod web-5d8f-* is to be locked (namespace label tproxy.io/lock=enabled)");
      expect(refused(validate(pod, LOCKED_NS, CONFIG)), what).to.include(message);
    }
  });

  it("refuses a pod whose volume ca-certs is not the root certificates, or that mounts something else where they go", () => {
    const pod = appPod();
    pod.spec!.volumes!.push({ name: "ca-certs", secret: { secretName: "mine" } });
    expect(refused(inject(pod, LOCKED_NS, CONFIG))).to.include('its volume "ca-certs" differs from tproxy\'s root certificates').and.include('secret: {"secretName":"mine"} added');
    const other = appPod();
    other.spec!.containers![0]!.volumeMounts = [{ name: "data", mountPath: "/etc/ssl/certs/" }];
    expect(refused(inject(other, LOCKED_NS, CONFIG))).to.include('its container "app" mounts something else at /etc/ssl/certs/');
  });

  it("refuses a pod in a locked namespace (or labelled) that sets the annotation to anything but \"true\": no opt-out", () => {
    for (const value of ["false", "", "yes"]) {
      expect(refused(inject(appPod({ annotations: { "initializer.kubernetes.io/tproxy": value } }), LOCKED_NS, CONFIG))).to.include(
        `sets annotation initializer.kubernetes.io/tproxy=${JSON.stringify(value)}: a pod to lock cannot opt out`,
      );
    }
    expect(refused(inject(appPod({ labels: { "tproxy.io/lock": "enabled" }, annotations: { "initializer.kubernetes.io/tproxy": "false" } }), {}, CONFIG))).to.include("cannot opt out");
    // A pod label other than "enabled" does not take a pod out of a locked namespace either.
    expect(locked(inject(appPod({ labels: { "tproxy.io/lock": "disabled" } }), LOCKED_NS, CONFIG)).metadata!.annotations).to.deep.equal({ "initializer.kubernetes.io/tproxy": "true" });
  });

  it("refuses a pod with hostNetwork, naming it", () => {
    const pod = appPod();
    pod.spec!.hostNetwork = true;
    expect(refused(inject(pod, LOCKED_NS, CONFIG))).to.include("has hostNetwork: true");
    pod.spec!.hostNetwork = false;
    expect(inject(pod, LOCKED_NS, CONFIG).allowed).to.equal(true);
  });

  it("refuses a container that is privileged or adds NET_ADMIN, NET_RAW or ALL, naming it (init containers too)", () => {
    const cases: Array<[(p: Pod) => void, string]> = [
      [(p) => void (p.spec!.containers![1]!.securityContext = { privileged: true }), 'its container "log" is privileged, which would undo the lock'],
      [(p) => void (p.spec!.containers![0]!.securityContext!.capabilities!.add = ["NET_ADMIN"]), 'its container "app" adds capabilities NET_ADMIN'],
      [(p) => void (p.spec!.containers![0]!.securityContext!.capabilities!.add = ["CHOWN", "CAP_NET_RAW"]), 'its container "app" adds capabilities CAP_NET_RAW'],
      [(p) => void (p.spec!.containers![0]!.securityContext!.capabilities!.add = ["ALL"]), 'its container "app" adds capabilities ALL'],
      [(p) => void (p.spec!.initContainers = [{ name: "migrate", image: "x", securityContext: { capabilities: { add: ["NET_ADMIN"] } } }]), 'its init container "migrate" adds capabilities NET_ADMIN'],
    ];
    for (const [make, message] of cases) {
      const pod = appPod();
      make(pod);
      expect(refused(inject(pod, LOCKED_NS, CONFIG))).to.include(message);
    }
    // Control: capabilities that do not touch the network are fine.
    const ok = appPod();
    ok.spec!.containers![0]!.securityContext!.capabilities!.add = ["CHOWN"];
    expect(inject(ok, LOCKED_NS, CONFIG).allowed).to.equal(true);
  });

  it("drops NET_RAW and mounts the certificates in sidecars (init containers with restartPolicy Always) too, and adds nothing where ALL is dropped", () => {
    const pod = appPod();
    pod.spec!.initContainers = [{ name: "proxy-sidecar", image: "x", restartPolicy: "Always" }, { name: "migrate", image: "y" }];
    pod.spec!.containers![0]!.securityContext = { capabilities: { drop: ["ALL"] } };
    const out = locked(inject(pod, LOCKED_NS, CONFIG));
    expect(out.spec!.initContainers!.map((c) => c.name)).to.deep.equal(["tproxy", "proxy-sidecar", "migrate"]);
    expect(container(out, "proxy-sidecar").securityContext).to.deep.equal({ capabilities: { drop: ["NET_RAW"] } });
    expect(container(out, "proxy-sidecar").volumeMounts).to.deep.equal(CONFIG.volumeMounts);
    expect(container(out, "migrate")).to.deep.equal({ name: "migrate", image: "y" });
    expect(container(out, "app").securityContext).to.deep.equal({ capabilities: { drop: ["ALL"] } });
  });
});

describe("validate()", () => {
  it("passes the pod inject() made, and a pod not to lock", () => {
    expect(validate(locked(inject(appPod(), LOCKED_NS, CONFIG)), LOCKED_NS, CONFIG)).to.deep.equal({ allowed: true });
    expect(validate(appPod(), {}, CONFIG)).to.deep.equal({ allowed: true });
  });

  it("refuses a pod to lock that a later webhook changed: init container gone or not first, mounts or NET_RAW drop removed, annotation removed", () => {
    const changes: Array<[(p: Pod) => void, string]> = [
      [(p) => void (p.spec!.initContainers = []), "add /spec/initContainers/0"],
      [(p) => void p.spec!.initContainers!.unshift({ name: "first", image: "x" }), "replace /spec/initContainers/0/name"],
      [(p) => void (p.spec!.containers![1]!.volumeMounts = []), "add /spec/containers/1/volumeMounts/0"],
      [(p) => void (p.spec!.containers![0]!.securityContext!.capabilities!.drop = ["MKNOD"]), "add /spec/containers/0/securityContext/capabilities/drop/1"],
      [(p) => void (p.spec!.volumes = [p.spec!.volumes![0]!]), "add /spec/volumes/1"],
    ];
    for (const [change, op] of changes) {
      const pod = locked(inject(appPod(), LOCKED_NS, CONFIG));
      change(pod);
      const m = refused(validate(pod, LOCKED_NS, CONFIG));
      expect(m).to.include("is not locked as tproxy's injection makes it (did another mutating webhook change it after tproxy's?)").and.include(op);
    }
    // The annotation removed in a locked namespace: the namespace still says lock.
    const pod = locked(inject(appPod(), LOCKED_NS, CONFIG));
    delete pod.metadata!.annotations;
    expect(refused(validate(pod, LOCKED_NS, CONFIG))).to.include("add /metadata/annotations");
  });
});
