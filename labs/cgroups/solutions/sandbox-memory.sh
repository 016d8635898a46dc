# The sandbox's memory limit in MiB, read at the top of its cgroup tree (v2: memory.max).
if [ -f /sys/fs/cgroup/memory.max ]; then f=/sys/fs/cgroup/memory.max
else f=/sys/fs/cgroup/memory/memory.limit_in_bytes; fi
echo $(( $(cat $f) / 1048576 ))
