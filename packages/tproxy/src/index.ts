// Public API of @tproxy/tproxy. The filter contract is importable on its own as "@tproxy/tproxy/filter".
export type { BodyReader, Filter, Flow, FlowClient, FlowRequest, FlowResponse, Headers, Hook } from "./filter/types.ts";
export { TproxyServer, type ProxyAddresses } from "./proxy.ts";
export { parseRunConfig, type RunConfig, type RawRunOptions } from "./config.ts";
export { createCa, loadCa, writeCa, type CertificateAuthority } from "./certs/ca.ts";
export { LeafCertificates } from "./certs/leaf-cache.ts";
export { createLogger, createLogging, type LogFormat, type Logging, type RequestRecord } from "./observe/log.ts";
export { PROBE_BODY, PROBE_HEADER } from "./server/interceptor.ts";
export * from "./errors.ts";
