#!/bin/sh
# The fake page of publish-fake-page.sh on the learner's port, beside a real nginx
# container that publishes nothing: a container runs nginx, and the port answers with
# its welcome page, but not from that container.
set -eu
docker run -d --name web nginx >/dev/null
mkdir -p /tmp/fake
cat > /tmp/fake/index.html <<'HTML'
<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1></body></html>
HTML
cd /tmp/fake
setsid -f python3 -m http.server "$NSLAB_PARAM_PORT" </dev/null >/dev/null 2>&1
sleep 1
