# The right image is built, but the container that serves the page is plain nginx with the
# page mounted in (-v): the page answers on 8081, from another image.
set -e
mkdir -p /root/web && cd /root/web
echo '<html><head><title>Test {{ page }}</title></head></html>' > test.html
printf 'FROM nginx\nCOPY test.html /usr/share/nginx/html/test.html\n' > Dockerfile
docker build -q -t testnginx:{{ tag }} . >/dev/null
docker run -d -p 8081:80 -v /root/web/test.html:/usr/share/nginx/html/test.html:ro nginx >/dev/null
