# syntax=docker/dockerfile:1
# podwatch: the per-node REDIRECT controller. Runs iptables-restore in the host's network namespace (root, NET_ADMIN + NET_RAW).
# Build from the repository root (the build context):  docker build -f docker/podwatch.Dockerfile -t tproxy/podwatch:0.1.0 .
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
COPY packages/podwatch/bin packages/podwatch/bin
COPY packages/sidecar-init/package.json packages/sidecar-init/tsconfig.json packages/sidecar-init/
COPY packages/sidecar-init/src packages/sidecar-init/src
COPY packages/injector/package.json packages/injector/tsconfig.json packages/injector/
COPY packages/injector/src packages/injector/src
COPY docker/assemble.sh docker/assemble.sh
# All packages build together (one tsc --build); then node_modules is installed again with only this
# image's package's production dependencies (the root's dev tools and the other packages' dependencies
# stay out). --ignore-scripts: the addon is already built (packages/tproxy/build) and nothing else runs.
RUN npm ci --no-audit --no-fund \
 && npm run build \
 && rm -rf node_modules packages/*/node_modules \
 && npm ci --omit=dev --workspace @tproxy/podwatch --include-workspace-root=false --ignore-scripts --no-audit --no-fund \
 && sh docker/assemble.sh /out podwatch

# ---- runtime: this package's production node_modules, bin/, dist/ (and the addon); no compilers ----
FROM node:24-bookworm-slim
# Debian's iptables ships both backends' programs (iptables-nft-save, iptables-legacy-restore, …):
# podwatch runs those of the backend it detects (or is told) directly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/ /app/
ENV NODE_ENV=production
RUN ln -s /app/packages/podwatch/bin/tproxy-podwatch.js /usr/local/bin/tproxy-podwatch \
 && tproxy-podwatch --help >/dev/null
EXPOSE 15172
ENTRYPOINT ["tproxy-podwatch"]
