# The course document's Dockerfile, on Debian: its ubuntu:14.04 (and trusty's sources) are
# not in this course's registry, and Debian's nginx serves /var/www/html. The one build in
# the lab's replays that runs apt-get (about 15 s); the wrong answers build FROM nginx.
set -e
mkdir -p /root/web && cd /root/web
cat > test.html <<'HTML'
<!DOCTYPE html>
<html>
  <head><title>Welcome to nginx Test {{ page }}!</title></head>
  <body><h1>Test {{ page }}</h1></body>
</html>
HTML
cat > Dockerfile <<'DOCKERFILE'
FROM debian:bookworm
RUN apt-get -y update
RUN apt-get -y install nginx
COPY test.html /var/www/html/test.html
ENTRYPOINT nginx -g "daemon off;"
DOCKERFILE
docker build -q -f Dockerfile -t testnginx:{{ tag }} . >/dev/null
docker run -d -p 8081:80 testnginx:{{ tag }} >/dev/null
for i in $(seq 50); do curl -sf localhost:8081/test.html >/dev/null && break; sleep 0.1; done
