# A hog OOM-killed, but under a limit 32 MiB higher than asked for.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/small; mkdir -p $G; echo $(( {{ mem_mb }} + 32 ))M > $G/memory.max
  [ ! -f $G/memory.swap.max ] || echo 0 > $G/memory.swap.max
  events=$G/memory.events
else
  G=/sys/fs/cgroup/memory/small; mkdir -p $G; echo $(( {{ mem_mb }} + 32 ))M > $G/memory.limit_in_bytes
  events=$G/memory.oom_control
fi
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec stress-ng --vm 1 --vm-bytes 256M --quiet" </dev/null >/dev/null 2>&1
for i in $(seq 100); do
  [ "$(awk '$1 == "oom_kill" { print $2 }' $events)" -gt 0 ] 2>/dev/null && break; sleep 0.1
done
pkill stress-ng
