# Tamper: a copy of sleep named like the worker, in a cgroup with the right quota.
quota=$(awk 'BEGIN { printf "%d", {{ target }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/lim; mkdir -p $G; echo "$quota 100000" > $G/cpu.max
else
  G=/sys/fs/cgroup/cpu/lim; mkdir -p $G; echo $quota > $G/cpu.cfs_quota_us
fi
cp /bin/sleep /tmp/stress-ng-cpu
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec /tmp/stress-ng-cpu 1000" </dev/null >/dev/null 2>&1
