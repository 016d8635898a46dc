#!/bin/sh
# Runs as root in each new sandbox of the docker-basics lab (NSLAB_PARAM_* in the
# environment), within the 30 s setup limit: one pull of debian:bookworm (~3 s), a build
# with a single COPY (no apt, no RUN: ~1 s) and a `docker run` (~0.5 s).
#
# It builds the image `vault:1`, which holds this learner's secret in /srv/vault/secret,
# and runs it as the container `vault`, whose entrypoint only sleeps. The sandbox's own
# /srv/vault/secret holds a decoy, so that the file is found only by looking inside the
# container's mount namespace (nsenter, docker exec, /proc/PID/root). The secret goes in
# by COPY, never by `RUN echo`: `docker history` shows a RUN's command line, while a
# COPY shows only the digest of what it copied.
set -eu

secret=$NSLAB_PARAM_SECRET
decoy=$NSLAB_PARAM_DECOY
# Nothing started below may carry the params in its environment (/proc/PID/environ).
for var in $(env | sed -n 's/^\(NSLAB_PARAM_[A-Z0-9_]*\)=.*/\1/p'); do
    unset "$var"
done

mkdir -p /srv/vault
printf '%s\n' "$decoy" > /srv/vault/secret

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
printf '%s\n' "$secret" > "$ctx/secret"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM debian:bookworm
COPY secret /srv/vault/secret
ENTRYPOINT ["sleep", "infinity"]
DOCKERFILE
docker build -q -t vault:1 "$ctx" >/dev/null
docker run -d --name vault vault:1 >/dev/null
