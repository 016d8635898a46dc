# The quota written by hand into a cgroup made below the container's, with the container's
# PID 1 moved there: the kernel holds the loop, but Docker knows nothing of it.
set -e
docker run -d --name hog debian:bookworm sh -c 'while :; do :; done'
pid=$(docker top hog hpid | tail -n 1)
quota=$(awk 'BEGIN { printf "%d", {{ target }} * 100000 + 0.5 }')
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # v2: a cgroup with a child may hold no process, so the engine's cgroup gets two children.
  G=/sys/fs/cgroup$(cut -d: -f3 /proc/$pid/cgroup)
  mkdir $G/lim $G/rest
  for p in $(cat $G/cgroup.procs); do [ $p = $pid ] || echo $p > $G/rest/cgroup.procs; done
  echo $pid > $G/lim/cgroup.procs
  echo +cpu > $G/cgroup.subtree_control
  echo "$quota 100000" > $G/lim/cpu.max
else
  G=/sys/fs/cgroup/cpu$(awk -F: '$2 == "cpu" || $2 ~ /^cpu,/ { print $3 }' /proc/$pid/cgroup)
  mkdir $G/lim
  echo $quota > $G/lim/cpu.cfs_quota_us
  echo $pid > $G/lim/cgroup.procs
fi
