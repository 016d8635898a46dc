# --memory-swap is memory plus swap; --memory-swappiness exists on cgroup v1 only.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  docker run -d --name knobs -m {{ mem_mb }}m --memory-swap $(( {{ mem_mb }} + {{ swap_mb }} ))m \
    --memory-reservation {{ res_mb }}m debian:bookworm sleep infinity
else
  docker run -d --name knobs -m {{ mem_mb }}m --memory-swap $(( {{ mem_mb }} + {{ swap_mb }} ))m \
    --memory-reservation {{ res_mb }}m --memory-swappiness {{ swappiness }} debian:bookworm sleep infinity
fi
