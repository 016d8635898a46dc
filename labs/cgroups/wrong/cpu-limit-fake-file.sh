# Tamper: quota files written in /tmp, and one bound over the sandbox's own quota file so
# that `cat` inside shows the target. The hog itself is never limited.
setsid -f stress-ng --cpu 1 --quiet </dev/null >/dev/null 2>&1
quota=$(awk 'BEGIN { printf "%d", {{ target }} * 100000 + 0.5 }')
mkdir -p /tmp/lim
echo $quota > /tmp/lim/cpu.cfs_quota_us
echo 100000 > /tmp/lim/cpu.cfs_period_us
echo "$quota 100000" > /tmp/lim/cpu.max
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mount --bind /tmp/lim/cpu.max /sys/fs/cgroup/cpu.max
else
  mount --bind /tmp/lim/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_quota_us
fi
cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null
sleep 0.3
