#!/bin/bash
# The tutorial's loop: every INTERVAL seconds (default 5), the HTTP status of each URL in URLS, then one
# line about a ping to PING_HOST. Exits promptly on SIGTERM.
set -u
URLS="${URLS:-https://www.google.com https://storage.googleapis.com/solutions-public-assets/}"
PING_HOST="${PING_HOST:-www.google.com}"
INTERVAL="${INTERVAL:-5}"

trap 'echo "Caught SIGTERM signal, exiting."; exit 0' TERM INT

while true; do
  for url in $URLS; do
    echo "${url}: $(curl -s -o /dev/null -m 10 -w '%{http_code}' "$url")"
  done
  # One line: the reply, or why there was none ("ping: sendmsg: Operation not permitted" when locked).
  out="$(ping -c 1 -W 2 "$PING_HOST" 2>&1)"
  line="$(printf '%s\n' "$out" | grep -E 'bytes from|not permitted|[Uu]nknown|failure|100% packet loss' | head -n 1)"
  echo "ping ${PING_HOST}: ${line:-$(printf '%s\n' "$out" | tail -n 1)}"
  sleep "$INTERVAL" &
  wait $!
done
