// Per-pod rules: which pod asks decides where it may go. One cluster-wide filter says "namespace
// payments may reach www.google.com", and "a pod labelled egress.tproxy/google=allowed too".
//   helm upgrade tproxy charts/tproxy --reuse-values --set-file filter.script=examples/filters/per-pod.ts
//
// `flow.client.pod` is the pod of this node whose address opened the connection, as podwatch last saw it
// through the API (namespace, name, labels, annotations, serviceAccount, node). It is undefined for any
// address no pod of this node has (the node, host-network pods), and while podwatch's map is missing or
// older than 30 s: deny then, as below, rather than guess.
//
// Whom to trust: a namespace is what the cluster's administrators grant; labels and annotations are
// whatever anyone who may create or edit pods in that namespace writes. Rules on labels are as strong
// as the RBAC on pods of the namespaces they apply to.
import type { Filter } from "@tproxy/tproxy/filter";

/** Hosts the pods of a namespace may reach. */
const BY_NAMESPACE: Readonly<Record<string, readonly string[]>> = {
  payments: ["www.google.com", "storage.googleapis.com"],
};

/** Hosts a pod may reach when it carries the label, whatever its namespace. */
const BY_LABEL: ReadonlyArray<{ readonly label: string; readonly value: string; readonly hosts: readonly string[] }> = [
  { label: "egress.tproxy/google", value: "allowed", hosts: ["www.google.com"] },
];

export default {
  request(flow) {
    const pod = flow.client.pod;
    if (pod === undefined) {
      flow.respond(403, `tproxy: ${flow.client.address} is not a known pod of this node; denied\n`);
      return;
    }
    const host = flow.request.host.toLowerCase();
    const allowed = (BY_NAMESPACE[pod.namespace] ?? []).includes(host) || BY_LABEL.some((r) => pod.labels[r.label] === r.value && r.hosts.includes(host));
    if (!allowed) flow.respond(403, `tproxy: ${pod.namespace}/${pod.name} may not reach ${host}\n`);
  },
} satisfies Filter;
