# Tamper: the hog is OOM-killed under a limit 96 MiB higher than asked for, and the limit
# is lowered to the asked-for value only afterwards (the kernel allows that once the hog
# is gone), so the files read "right limit, OOM kills > 0".
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/small; mkdir -p $G; limit=$G/memory.max
  [ ! -f $G/memory.swap.max ] || echo 0 > $G/memory.swap.max
  events=$G/memory.events
else
  G=/sys/fs/cgroup/memory/small; mkdir -p $G; limit=$G/memory.limit_in_bytes
  events=$G/memory.oom_control
fi
echo $(( {{ mem_mb }} + 96 ))M > $limit
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec stress-ng --vm 1 --vm-bytes 256M --quiet" </dev/null >/dev/null 2>&1
for i in $(seq 100); do
  [ "$(awk '$1 == "oom_kill" { print $2 }' $events)" -gt 0 ] 2>/dev/null && break; sleep 0.1
done
pkill stress-ng
for i in $(seq 50); do [ -z "$(cat $G/cgroup.procs)" ] && break; sleep 0.1; done
echo {{ mem_mb }}M > $limit
cat $limit
