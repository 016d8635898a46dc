# The tree is right, but the hog in it is stopped (SIGSTOP): nothing there burns CPU.
team=$(awk 'BEGIN { printf "%d", {{ team_cpus }} * 100000 + 0.5 }')
job=$(awk 'BEGIN { printf "%d", {{ job_cpus }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  T=/sys/fs/cgroup/team; mkdir -p $T; echo "$team 100000" > $T/cpu.max
  echo +cpu > $T/cgroup.subtree_control; mkdir -p $T/job; echo "$job 100000" > $T/job/cpu.max
else
  T=/sys/fs/cgroup/cpu/team; mkdir -p $T/job
  echo $team > $T/cpu.cfs_quota_us; echo $job > $T/job/cpu.cfs_quota_us
fi
setsid -f sh -c "echo \$\$ > $T/job/cgroup.procs && exec stress-ng --cpu 1 --quiet" </dev/null >/dev/null 2>&1
for i in $(seq 50); do pgrep -x stress-ng-cpu >/dev/null && break; sleep 0.1; done
kill -STOP $(pgrep -x stress-ng-cpu)
