# syntax=docker/dockerfile:1
# example-app: the tutorial's Debian app. Every 5 s it requests two HTTPS URLs and pings once, printing
# `https://www.google.com: 418`-style lines; locked, it shows what the filter allows.
# Build from the repository root:  docker build -f docker/example-app.Dockerfile -t tproxy/example-app:0.1.0 .
# The same Debian release as the node images (node:24-bookworm-slim is built on it); no Node.js needed.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends bash ca-certificates curl iputils-ping \
 && rm -rf /var/lib/apt/lists/*
COPY docker/example-app/start.sh /usr/local/bin/start.sh
RUN chmod 0755 /usr/local/bin/start.sh
CMD ["/usr/local/bin/start.sh"]
