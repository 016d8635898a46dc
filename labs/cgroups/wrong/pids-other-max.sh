# A bomb held at 10 more processes than asked for.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/bomb; else G=/sys/fs/cgroup/pids/bomb; fi
mkdir -p $G; echo $(( {{ pids_max }} + 10 )) > $G/pids.max
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec bash -c ':(){ :|:& };:'" </dev/null >/dev/null 2>&1
sleep 1
