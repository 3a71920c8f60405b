# syntax=docker/dockerfile:1
# sidecar-init: the init container that locks a pod's egress (root in the pod, NET_ADMIN + NET_RAW).
# Build from the repository root (the build context):  docker build -f docker/sidecar-init.Dockerfile -t tproxy/sidecar-init:0.1.0 .
# Uses only the node:24-bookworm-slim base image, Debian packages and the npm registry.

# ---- build: compile the workspace and its N-API addon; the compilers stay in this stage ----
FROM node:24-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# node-gyp builds the SO_ORIGINAL_DST addon against the headers the base image ships (no download).
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
COPY packages/sidecar-init/bin packages/sidecar-init/bin
COPY packages/injector/package.json packages/injector/tsconfig.json packages/injector/
COPY packages/injector/src packages/injector/src
COPY docker/assemble.sh docker/assemble.sh
# All packages build together (one tsc --build); then node_modules is installed again with only this
# image's package's production dependencies (the root's dev tools and the other packages' dependencies
# stay out). --ignore-scripts: the addon is already built (packages/tproxy/build) and nothing else runs.
RUN npm ci --no-audit --no-fund \
 && npm run build \
 && npm run bundle:cni \
 && rm -rf node_modules packages/*/node_modules \
 && npm ci --omit=dev --workspace @tproxy/sidecar-init --include-workspace-root=false --ignore-scripts --no-audit --no-fund \
 && sh docker/assemble.sh /out sidecar-init

# ---- runtime: this package's production node_modules, bin/, dist/ (and the addon); no compilers ----
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/ /app/
ENV NODE_ENV=production
# tproxy-cni-install (lock.mode cni) copies this image's node and dist/cni/tproxy-cni.cjs (the plugin in
# one file, made by bundle:cni above) onto the node.
RUN ln -s /app/packages/sidecar-init/bin/tproxy-sidecar-init.js /usr/local/bin/tproxy-sidecar-init \
 && ln -s /app/packages/sidecar-init/bin/tproxy-cni-install.js /usr/local/bin/tproxy-cni-install \
 && tproxy-sidecar-init --help >/dev/null \
 && test -f /app/packages/sidecar-init/dist/cni/tproxy-cni.cjs
ENTRYPOINT ["tproxy-sidecar-init"]
