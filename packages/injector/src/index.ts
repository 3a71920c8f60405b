// What @tproxy/injector makes public: the mutation and the check (pure), the review protocol, the server.
export { inject, lockReason, differences, appContainers, LOCK_LABEL_VALUE, type InjectionConfig, type InjectResult } from "./inject.ts";
export { validate, type ValidateResult } from "./validate.ts";
export { answer, REVIEW_API_VERSION, type AdmissionResponse, type Answer, type Mode } from "./review.ts";
export { parseInjectionConfig, readInjectionConfig, parseServeConfig, DEFAULT_PORT, DEFAULT_MAX_BODY_BYTES, type ServeConfig } from "./config.ts";
export { ApiNamespaceLabels, StaticNamespaceLabels, type NamespaceLabels } from "./namespaces.ts";
export { startInjectorServer, type InjectorServer, type InjectorServerOptions } from "./server.ts";
export { InjectorError, ConfigError } from "./errors.ts";
export type { Pod, Container, Volume, VolumeMount } from "./pod.ts";
