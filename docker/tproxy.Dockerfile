# syntax=docker/dockerfile:1
# tproxy: the MITM proxy (`tproxy run`). Non-root (uid 65532), no capabilities needed.
# Build from the repository root (the build context):  docker build -f docker/tproxy.Dockerfile -t tproxy/tproxy:0.1.0 .
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
COPY packages/tproxy/bin packages/tproxy/bin
COPY packages/podwatch/package.json packages/podwatch/tsconfig.json packages/podwatch/
COPY packages/podwatch/src packages/podwatch/src
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
 && npm ci --omit=dev --workspace @tproxy/tproxy --include-workspace-root=false --ignore-scripts --no-audit --no-fund \
 && sh docker/assemble.sh /out tproxy

# ---- runtime: this package's production node_modules, bin/, dist/ (and the addon); no compilers ----
FROM node:24-bookworm-slim
# The public CAs: tproxy verifies upstream certificates, and without the package /etc/ssl/certs is missing.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/ /app/
ENV NODE_ENV=production
# The main thread only supervises (the serving threads get their own young-generation bound from the
# proxy): a small young generation there, and bounded malloc arenas for the process, keep RSS down
# (measured with npm run bench, which runs the proxy with these same settings).
ENV NODE_OPTIONS=--max-semi-space-size=1 \
    MALLOC_ARENA_MAX=2
RUN ln -s /app/packages/tproxy/bin/tproxy.js /usr/local/bin/tproxy \
 && tproxy --help >/dev/null
# A fixed non-root user; the chart runs the container as 65532:65532 with a read-only root filesystem.
RUN groupadd --system --gid 65532 tproxy && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin tproxy
USER 65532:65532
EXPOSE 15170 1080 15171
ENTRYPOINT ["tproxy"]
CMD ["--help"]
