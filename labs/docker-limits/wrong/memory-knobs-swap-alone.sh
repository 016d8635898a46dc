# The course's reading: --memory-swap as the swap alone.
docker run -d --name knobs -m {{ mem_mb }}m --memory-swap {{ swap_mb }}m \
  --memory-reservation {{ res_mb }}m debian:bookworm sleep infinity
