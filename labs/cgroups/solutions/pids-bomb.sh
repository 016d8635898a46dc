set -e
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/bomb
else G=/sys/fs/cgroup/pids/bomb; fi
mkdir -p $G
echo {{ pids_max }} > $G/pids.max
# The shell moves itself in first, then becomes the bomb: no bomb process is ever outside.
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec bash -c ':(){ :|:& };:'" </dev/null >/dev/null 2>&1
for i in $(seq 50); do [ "$(cat $G/pids.current)" -ge {{ pids_max }} ] && break; sleep 0.1; done
cat $G/pids.current $G/pids.events
