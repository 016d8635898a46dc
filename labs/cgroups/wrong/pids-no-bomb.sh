# Typical mistake: the cgroup is right, but only three processes run in it.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/bomb; else G=/sys/fs/cgroup/pids/bomb; fi
mkdir -p $G; echo {{ pids_max }} > $G/pids.max
setsid -f sh -c "echo \$\$ > $G/cgroup.procs; sleep 1000 & sleep 1000 & exec sleep 1000" </dev/null >/dev/null 2>&1
sleep 0.3
