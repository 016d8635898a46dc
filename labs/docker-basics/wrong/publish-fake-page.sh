#!/bin/sh
# An echo of the expected page: a copy of nginx's welcome page served on the learner's
# port by a Python server in the sandbox itself, no container at all.
set -eu
mkdir -p /tmp/fake
cat > /tmp/fake/index.html <<'HTML'
<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1></body></html>
HTML
cd /tmp/fake
setsid -f python3 -m http.server "$NSLAB_PARAM_PORT" </dev/null >/dev/null 2>&1
sleep 1
