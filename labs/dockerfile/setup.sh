#!/bin/sh
# Runs as root in each new sandbox of the dockerfile lab (NSLAB_PARAM_* in the
# environment). It only writes files (no pull, no build: a sandbox of this lab is ready in
# well under a second):
#   /root/layers  a Dockerfile with $NSLAB_PARAM_RUNS RUN lines, for the layers question
#   /root/site    a Dockerfile that copies its page *before* a slow step, for the cache task
set -eu

mkdir -p /root/layers /root/site

{
    echo 'FROM debian:bookworm'
    echo 'LABEL course="nslab" lesson="layers"'
    i=1
    while [ "$i" -le "$NSLAB_PARAM_RUNS" ]; do
        echo "RUN mkdir -p /srv/app && echo step $i > /srv/app/step$i"
        i=$((i + 1))
    done
    echo 'ENV GREETING=hello'
    echo 'COPY notes.txt /srv/app/notes.txt'
    echo 'ENTRYPOINT ["cat", "/srv/app/notes.txt"]'
} > /root/layers/Dockerfile
echo "notes for the layers question" > /root/layers/notes.txt

cat > /root/site/Dockerfile <<'DOCKERFILE'
FROM debian:bookworm
COPY index.html /srv/index.html
# The slow step: it stands for the document's `apt-get -y install nginx`. It also writes
# the moment it ran, so you can tell a layer that was built again from one taken from
# the cache.
RUN sleep 2 && date '+built at %T.%N' > /srv/built-at
ENTRYPOINT ["cat", "/srv/index.html", "/srv/built-at"]
DOCKERFILE
echo "first version of the page" > /root/site/index.html
