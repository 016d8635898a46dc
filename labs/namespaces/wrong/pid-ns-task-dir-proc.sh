# pid-ns: a /proc that is not the new namespace's own. The task folder of the sandbox's
# PID 1 is a piece of the sandbox's proc that holds only "1", so /proc/1/status is a proc
# file and no process of the sandbox shows: but the new namespace's own processes are
# missing from it too.
setsid -f unshare --pid --fork --mount bash -c 'mount --bind /proc/1/task /proc; sleep 1000 & wait' </dev/null >/dev/null 2>&1
sleep 1
