# Built and running, but port 80 is not published on the sandbox's 8081.
set -e
mkdir -p /root/web && cd /root/web
echo '<html><head><title>Test {{ page }}</title></head></html>' > test.html
printf 'FROM nginx\nCOPY test.html /usr/share/nginx/html/test.html\n' > Dockerfile
docker build -q -t testnginx:{{ tag }} . >/dev/null
docker run -d testnginx:{{ tag }} >/dev/null
