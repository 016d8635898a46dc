# The document's test.html as it is ("Test 7"), not the learner's page.
set -e
mkdir -p /root/web && cd /root/web
echo '<html><head><title>Welcome to nginx Test 7!</title></head><body><h1>Test 7</h1></body></html>' > test.html
printf 'FROM nginx\nCOPY test.html /usr/share/nginx/html/test.html\nENTRYPOINT nginx -g "daemon off;"\n' > Dockerfile
docker build -q -f Dockerfile -t testnginx:{{ tag }} . >/dev/null
docker run -d -p 8081:80 testnginx:{{ tag }} >/dev/null
