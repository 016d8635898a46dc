# Tamper: no bomb. 30 sleeps are started in the cgroup while it has no limit, and then
# pids.max is lowered under them: the kernel allows pids.current > pids.max that way, but
# it never refused a fork.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/bomb; else G=/sys/fs/cgroup/pids/bomb; fi
mkdir -p $G
setsid -f sh -c "echo \$\$ > $G/cgroup.procs; for i in \$(seq 29); do sleep 1000 & done; exec sleep 1000" </dev/null >/dev/null 2>&1
for i in $(seq 50); do [ "$(cat $G/pids.current)" -ge 30 ] && break; sleep 0.1; done
echo {{ pids_max }} > $G/pids.max
cat $G/pids.current $G/pids.max
