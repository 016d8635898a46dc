# Tamper: an unlimited loop, and quota files with the target written in /tmp and bound over
# the sandbox's own, so that `cat` inside shows them. The host reads the real files.
docker run -d --name hog debian:bookworm sh -c 'while :; do :; done'
quota=$(awk 'BEGIN { printf "%d", {{ target }} * 100000 + 0.5 }')
mkdir -p /tmp/lim
echo $quota > /tmp/lim/cpu.cfs_quota_us
echo "$quota 100000" > /tmp/lim/cpu.max
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mount --bind /tmp/lim/cpu.max /sys/fs/cgroup/cpu.max
else
  mount --bind /tmp/lim/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_quota_us
fi
