# The image is built but never run: a Python web server in the sandbox serves the page on
# 8081, so that `curl localhost:8081/test.html` looks right.
set -e
mkdir -p /root/web && cd /root/web
echo '<html><head><title>Test {{ page }}</title></head></html>' > test.html
printf 'FROM nginx\nCOPY test.html /usr/share/nginx/html/test.html\n' > Dockerfile
docker build -q -t testnginx:{{ tag }} . >/dev/null
setsid -f python3 -m http.server 8081 --directory /root/web </dev/null >/dev/null 2>&1
for i in $(seq 50); do curl -sf localhost:8081/test.html >/dev/null && break; sleep 0.1; done
