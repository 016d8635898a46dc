# The quota is right and both processes moved, but the hog limits itself (--cpu-load 10):
# it sleeps most of the time, so it stays far below the quota on its own.
setsid -f stress-ng --cpu 1 --cpu-load 10 --quiet </dev/null >/dev/null 2>&1
for i in $(seq 50); do pgrep -x stress-ng-cpu >/dev/null && break; sleep 0.1; done
quota=$(awk 'BEGIN { printf "%d", {{ target }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/lim; mkdir -p $G; echo "$quota 100000" > $G/cpu.max
else
  G=/sys/fs/cgroup/cpu/lim; mkdir -p $G; echo $quota > $G/cpu.cfs_quota_us
fi
for p in $(pgrep stress-ng); do echo $p > $G/cgroup.procs; done
