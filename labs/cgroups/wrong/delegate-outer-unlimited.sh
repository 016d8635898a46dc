# Typical mistake: nested, the inner quota right, but the outer cgroup has no quota.
job=$(awk 'BEGIN { printf "%d", {{ job_cpus }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  T=/sys/fs/cgroup/team; mkdir -p $T; echo +cpu > $T/cgroup.subtree_control
  mkdir -p $T/job; echo "$job 100000" > $T/job/cpu.max
else
  T=/sys/fs/cgroup/cpu/team; mkdir -p $T/job; echo $job > $T/job/cpu.cfs_quota_us
fi
setsid -f sh -c "echo \$\$ > $T/job/cgroup.procs && exec stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
sleep 0.5
