# The page copied to Debian's web root (/var/www/html) in an image whose nginx serves
# /usr/share/nginx/html: the same mistake as the document's Ubuntu path on Debian's nginx,
# without an apt-get build.
set -e
mkdir -p /root/web && cd /root/web
echo '<html><head><title>Test {{ page }}</title></head></html>' > test.html
printf 'FROM nginx\nCOPY test.html /var/www/html/test.html\n' > Dockerfile
docker build -q -t testnginx:{{ tag }} . >/dev/null
docker run -d -p 8081:80 testnginx:{{ tag }} >/dev/null
for i in $(seq 50); do curl -s -o /dev/null localhost:8081/ && break; sleep 0.1; done
