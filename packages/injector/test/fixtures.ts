// A small injection config and pods for the unit tests. The chart's real config is checked against the
// examples in test/chart/injector.test.ts; this one only needs the same shape.
import type { InjectionConfig, Pod } from "../src/index.ts";

export const CONFIG: InjectionConfig = {
  annotation: "initializer.kubernetes.io/tproxy",
  lockLabel: "tproxy.io/lock",
  initContainer: {
    name: "tproxy",
    image: "registry.test/sidecar-init:1",
    command: ["tproxy-sidecar-init"],
    env: [{ name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } }],
    securityContext: { allowPrivilegeEscalation: false, privileged: false, capabilities: { drop: ["ALL"], add: ["NET_ADMIN", "NET_RAW"] } },
  },
  volume: { name: "ca-certs", configMap: { name: "tproxy-root-certs", items: [{ key: "ca-certificates.crt", path: "ca-certificates.crt" }] } },
  volumeMounts: [
    { name: "ca-certs", mountPath: "/etc/ssl/certs/", readOnly: true },
    { name: "ca-certs", mountPath: "/usr/local/share/ca-certificates/tproxy/", readOnly: true },
  ],
};

export const LOCKED_NS = { "tproxy.io/lock": "enabled", "kubernetes.io/metadata.name": "team-a" };

/** A pod as a Deployment's ReplicaSet creates it: generateName, no name. */
export function appPod(extra: { labels?: Record<string, string>; annotations?: Record<string, string> } = {}): Pod {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { generateName: "web-5d8f-", namespace: "team-a", ...extra },
    spec: {
      containers: [
        { name: "app", image: "example/app:1", securityContext: { runAsUser: 1000, capabilities: { drop: ["MKNOD"] } } },
        { name: "log", image: "example/log:1", volumeMounts: [{ name: "data", mountPath: "/data" }] },
      ],
      volumes: [{ name: "data", emptyDir: {} }],
    },
  };
}
