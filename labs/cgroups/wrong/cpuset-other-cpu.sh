# Typical mistake: a cpuset cgroup, but on the other CPU.
other=$(( 1 - {{ cpu }} ))
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/pin; mkdir -p $G
else
  G=/sys/fs/cgroup/cpuset/pin; mkdir -p $G
  cat /sys/fs/cgroup/cpuset/cpuset.mems > $G/cpuset.mems
fi
echo $other > $G/cpuset.cpus
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
sleep 0.5
