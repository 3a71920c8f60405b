# syntax=docker/dockerfile:1
# injector: the admission webhook that locks pods (`tproxy-injector serve`). Non-root (uid 65532), no capabilities.
# Build from the repository root (the build context):  docker build -f docker/injector.Dockerfile -t tproxy/injector:0.1.0 .
# Uses only the node:24-bookworm-slim base image, Debian packages and the npm registry.
# An image of its own rather than podwatch's with another command: podwatch's runs as root and carries
# iptables for the node's rules; the webhook needs neither, and answers the API server for every pod.

# ---- build: compile the workspace (the tproxy package's addon too: npm ci builds every workspace) ----
FROM node:24-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# node-gyp's own variable for its --nodedir: npm_config_nodedir is not an npm setting, and npm warns
# about unknown npm_config_* variables.
ENV npm_package_config_node_gyp_nodedir=/usr/local
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json tsconfig.json ./
COPY packages/iptables/package.json packages/iptables/tsconfig.json packages/iptables/
COPY packages/iptables/src packages/iptables/src
COPY packages/tproxy/package.json packages/tproxy/tsconfig.json packages/tproxy/binding.gyp packages/tproxy/
COPY packages/tproxy/native packages/tproxy/native
COPY packages/tproxy/src packages/tproxy/src
COPY packages/podwatch/package.json packages/podwatch/tsconfig.json packages/podwatch/
COPY packages/podwatch/src packages/podwatch/src
COPY packages/sidecar-init/package.json packages/sidecar-init/tsconfig.json packages/sidecar-init/
COPY packages/sidecar-init/src packages/sidecar-init/src
COPY packages/injector/package.json packages/injector/tsconfig.json packages/injector/
COPY packages/injector/src packages/injector/src
COPY packages/injector/bin packages/injector/bin
COPY docker/assemble.sh docker/assemble.sh
# All packages build together (one tsc --build); then node_modules is installed again with only the
# injector's production dependencies.
RUN npm ci --no-audit --no-fund \
 && npm run build \
 && rm -rf node_modules packages/*/node_modules \
 && npm ci --omit=dev --workspace @tproxy/injector --include-workspace-root=false --ignore-scripts --no-audit --no-fund \
 && sh docker/assemble.sh /out injector

# ---- runtime: this package's production node_modules, bin/ and dist/; no compilers ----
FROM node:24-bookworm-slim
# The public CAs (@kubernetes/client-node trusts the cluster's CA from the service account, but a
# kubeconfig may name a public endpoint).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/ /app/
ENV NODE_ENV=production
RUN ln -s /app/packages/injector/bin/tproxy-injector.js /usr/local/bin/tproxy-injector \
 && tproxy-injector --help >/dev/null
# A fixed non-root user; the chart runs the container as 65532:65532 with a read-only root filesystem.
RUN groupadd --system --gid 65532 tproxy && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin tproxy
USER 65532:65532
EXPOSE 15173
ENTRYPOINT ["tproxy-injector"]
CMD ["--help"]
