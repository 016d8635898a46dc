# No build: the nginx image (whose entrypoint is already an exec form) under the task's name.
set -e
docker pull -q nginx >/dev/null
docker tag nginx testnginx:exec
docker run -d -p {{ port }}:80 testnginx:exec >/dev/null
