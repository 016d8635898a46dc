# Typical mistake: nested, but only the outer cgroup has a quota; the inner one has none.
team=$(awk 'BEGIN { printf "%d", {{ team_cpus }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  T=/sys/fs/cgroup/team; mkdir -p $T; echo "$team 100000" > $T/cpu.max
  echo +cpu > $T/cgroup.subtree_control; mkdir -p $T/job
else
  T=/sys/fs/cgroup/cpu/team; mkdir -p $T/job; echo $team > $T/cpu.cfs_quota_us
fi
setsid -f sh -c "echo \$\$ > $T/job/cgroup.procs && exec stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
sleep 0.5
