# Typical mistake: two cgroups, both pinned to CPU 0, but the weights were never set.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then B=/sys/fs/cgroup; else B=/sys/fs/cgroup/cpu; fi
mkdir -p $B/gold $B/silver
for g in gold silver; do
  setsid -f sh -c "echo \$\$ > $B/$g/cgroup.procs && exec taskset -c 0 stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
done
sleep 0.5
