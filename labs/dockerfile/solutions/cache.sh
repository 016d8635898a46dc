# The slow RUN before the COPY: a new page changes only the COPY's input, so the RUN's
# layer comes from the cache.
set -e
cd /root/site
cat > Dockerfile <<'DOCKERFILE'
FROM debian:bookworm
RUN sleep 2 && date '+built at %T.%N' > /srv/built-at
COPY index.html /srv/index.html
ENTRYPOINT ["cat", "/srv/index.html", "/srv/built-at"]
DOCKERFILE
docker build -q -t site:1 . >/dev/null
echo {{ v2 }} > index.html
docker build -q -t site:2 . >/dev/null
