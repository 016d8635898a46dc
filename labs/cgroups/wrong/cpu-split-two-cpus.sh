# Typical mistake: weights 2:1 and both pinned, but each to a CPU of its own.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  B=/sys/fs/cgroup; mkdir -p $B/gold $B/silver
  echo 200 > $B/gold/cpu.weight; echo 100 > $B/silver/cpu.weight
else
  B=/sys/fs/cgroup/cpu; mkdir -p $B/gold $B/silver
  echo 2048 > $B/gold/cpu.shares; echo 1024 > $B/silver/cpu.shares
fi
setsid -f sh -c "echo \$\$ > $B/gold/cgroup.procs && exec taskset -c 0 stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
setsid -f sh -c "echo \$\$ > $B/silver/cgroup.procs && exec taskset -c 1 stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
sleep 0.5
