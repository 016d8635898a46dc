# The Python variant of uts-program (ctypes: Python 3.11 has no os.unshare yet). The check
# runs it as `python3 /root/utsns.py NAME`, as it runs /root/utsns. Not replayed by
# `nslab lab test` (an exercise has one reference solution): run it in a sandbox of the lab
# and press Check to see it pass.
set -e
rm -f /root/utsns
cat > /root/utsns.py <<'SRC'
import ctypes, os, signal, socket, sys

CLONE_NEWUTS = 0x04000000                      # linux/sched.h
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(CLONE_NEWUTS) == -1:
    sys.exit("unshare: " + os.strerror(ctypes.get_errno()))
socket.sethostname(sys.argv[1])
signal.pause()
SRC
