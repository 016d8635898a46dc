# Memory and swap right, but no soft limit.
docker run -d --name knobs -m {{ mem_mb }}m --memory-swap $(( {{ mem_mb }} + {{ swap_mb }} ))m \
  debian:bookworm sleep infinity
