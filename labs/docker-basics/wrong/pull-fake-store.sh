#!/bin/sh
# A forged store entry: an image named nginx:latest with the registry's real manifest
# digest (anyone may read it from the registry), pointing at the debian layer already in
# the store. `docker images --digests` shows the right name and digest; the image id and
# the layers give it away.
set -eu
store=/var/lib/containers/storage/overlay-images/images.json
digest=$(curl -sfI -m 10 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    http://nslab-registry:5000/v2/library/nginx/manifests/latest |
    tr -d '\r' | sed -n 's/^Docker-Content-Digest: //Ip')
fake=$(head -c 32 /dev/urandom | sha256sum | cut -c1-64)
jq --arg id "$fake" --arg digest "$digest" \
    '. + [(.[0] | .id = $id | .digest = $digest | .digests = [$digest]
           | .names = ["docker.io/library/nginx:latest"])]' "$store" > "$store.new"
mv "$store.new" "$store"
