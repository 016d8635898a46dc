# Typical mistake: the limit is right, but no hog ever ran inside the cgroup.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  G=/sys/fs/cgroup/small; mkdir -p $G; echo {{ mem_mb }}M > $G/memory.max
else
  G=/sys/fs/cgroup/memory/small; mkdir -p $G; echo {{ mem_mb }}M > $G/memory.limit_in_bytes
fi
