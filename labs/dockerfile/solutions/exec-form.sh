set -e
mkdir -p /root/exec && cd /root/exec
printf 'FROM nginx\nENTRYPOINT ["nginx", "-g", "daemon off;"]\n' > Dockerfile
docker build -q -t testnginx:exec . >/dev/null
docker run -d -p {{ port }}:80 testnginx:exec >/dev/null
for i in $(seq 50); do curl -sf localhost:{{ port }}/ >/dev/null && break; sleep 0.1; done
