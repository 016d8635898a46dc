# The Dockerfile as setup wrote it (COPY before the slow RUN), built twice.
set -e
cd /root/site
docker build -q -t site:1 . >/dev/null
echo {{ v2 }} > index.html
docker build -q -t site:2 . >/dev/null
