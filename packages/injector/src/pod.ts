// The parts of a Pod the injector reads and writes, as plain JSON (what an AdmissionReview carries).
// Every other field passes through untouched, hence the index signatures.

export interface Capabilities {
  add?: string[];
  drop?: string[];
  [field: string]: unknown;
}

export interface SecurityContext {
  privileged?: boolean;
  capabilities?: Capabilities;
  [field: string]: unknown;
}

export interface VolumeMount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
  [field: string]: unknown;
}

export interface Container {
  name: string;
  restartPolicy?: string;
  securityContext?: SecurityContext;
  volumeMounts?: VolumeMount[];
  [field: string]: unknown;
}

export interface Volume {
  name: string;
  [field: string]: unknown;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; generateName?: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; [field: string]: unknown };
  spec?: { initContainers?: Container[]; containers?: Container[]; ephemeralContainers?: Container[]; volumes?: Volume[]; hostNetwork?: boolean; [field: string]: unknown };
  [field: string]: unknown;
}

/** How a pod is named in messages: its name, else its generateName prefix (a Deployment's pods have no name yet). */
export function podName(pod: Pod): string {
  const m = pod.metadata ?? {};
  return m.name ?? (m.generateName !== undefined ? `${m.generateName}*` : "(unnamed)");
}
