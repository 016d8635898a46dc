# The document's shell form: PID 1 is /bin/sh -c, nginx its child.
set -e
mkdir -p /root/exec && cd /root/exec
printf 'FROM nginx\nENTRYPOINT nginx -g "daemon off;"\n' > Dockerfile
docker build -q -t testnginx:exec . >/dev/null
docker run -d -p {{ port }}:80 testnginx:exec >/dev/null
