# The image keeps the shell form; --entrypoint replaces it at run time, so PID 1 is nginx.
set -e
mkdir -p /root/exec && cd /root/exec
printf 'FROM nginx\nENTRYPOINT nginx -g "daemon off;"\n' > Dockerfile
docker build -q -t testnginx:exec . >/dev/null
docker run -d -p {{ port }}:80 --entrypoint nginx testnginx:exec -g 'daemon off;' >/dev/null
