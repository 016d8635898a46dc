# The Python variant of uts-program (ctypes: Python 3.11 has no os.unshare yet).
set -e
cat > /root/utsns.py <<'SRC'
import ctypes, os, signal, socket, sys

CLONE_NEWUTS = 0x04000000                      # linux/sched.h
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(CLONE_NEWUTS) == -1:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
socket.sethostname(sys.argv[1])
signal.pause()
SRC
setsid -f python3 /root/utsns.py {{ progname }} </dev/null >/dev/null 2>&1
for i in $(seq 100); do
    pid=$(pgrep -f '^python3 /root/utsns.py') && [ "$(nsenter --target "$pid" --uts hostname)" = {{ progname }} ] && break
    sleep 0.1
done
