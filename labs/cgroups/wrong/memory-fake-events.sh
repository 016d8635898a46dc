# Tamper: a fake OOM counter bound over the sandbox's own file, and one in /tmp.
printf 'oom_kill_disable 0\nunder_oom 0\noom_kill 7\n' > /tmp/memory.oom_control
printf 'low 0\nhigh 0\nmax 9\noom 7\noom_kill 7\n' > /tmp/memory.events
echo {{ mem_mb }}M > /tmp/memory.max
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mount --bind /tmp/memory.events /sys/fs/cgroup/memory.events
else
  mount --bind /tmp/memory.oom_control /sys/fs/cgroup/memory/memory.oom_control
fi
