# pid-ns: a name is not a fact. A sleep copied to a file called "bash" is PID 1 (its comm
# is "bash"), and the second process is pushed in from outside with nsenter.
set -e
mkdir -p /tmp/fake
cp /usr/bin/sleep /tmp/fake/bash
setsid -f unshare --pid --fork --mount-proc /tmp/fake/bash 1000 </dev/null >/dev/null 2>&1
sleep 0.5
P=$(pgrep -f '^/tmp/fake/bash 1000$')
setsid -f nsenter --target "$P" --pid --mount sleep 1000 </dev/null >/dev/null 2>&1
sleep 1
