# The right order, but the second build is told not to use the cache.
set -e
cd /root/site
printf 'FROM debian:bookworm\nRUN sleep 2 && date +%%T.%%N > /srv/built-at\nCOPY index.html /srv/index.html\n' > Dockerfile
docker build -q -t site:1 . >/dev/null
echo {{ v2 }} > index.html
docker build -q --no-cache -t site:2 . >/dev/null
