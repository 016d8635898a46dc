# Typical mistake: one cgroup with the inner quota, not nested in another.
job=$(awk 'BEGIN { printf "%d", {{ job_cpus }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/job; mkdir -p $G; echo "$job 100000" > $G/cpu.max
else
  G=/sys/fs/cgroup/cpu/job; mkdir -p $G; echo $job > $G/cpu.cfs_quota_us
fi
setsid -f sh -c "echo \$\$ > $G/cgroup.procs && exec stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
sleep 0.5
