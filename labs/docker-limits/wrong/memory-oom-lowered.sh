# The OOM kill happened under a higher limit, lowered to the target afterwards.
docker run -d --name small -m 128m debian:bookworm sh -c 'head -c 200m /dev/zero | tail; sleep infinity'
id=$(docker ps -q --no-trunc -f name=small)
for G in /sys/fs/cgroup/memory/libpod_parent/libpod-$id /sys/fs/cgroup/libpod_parent/libpod-$id; do
  [ -d $G ] && break
done
for i in $(seq 50); do
  grep -qs '^oom_kill [1-9]' $G/memory.oom_control $G/memory.events && break
  sleep 0.1
done
docker update -m {{ mem_mb }}m --memory-swap {{ mem_mb }}m small
