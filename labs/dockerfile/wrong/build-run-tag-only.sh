# No build: the pulled nginx image gets the task's name, and the page is copied into the
# running container afterwards.
set -e
echo '<html><head><title>Test {{ page }}</title></head></html>' > /root/test.html
docker pull -q nginx >/dev/null
docker tag nginx testnginx:{{ tag }}
docker run -d --name web -p 8081:80 testnginx:{{ tag }} >/dev/null
docker cp /root/test.html web:/usr/share/nginx/html/test.html
