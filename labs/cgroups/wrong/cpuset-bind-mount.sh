# Tamper: a hog pinned by taskset only, plus fake cpuset files and a fake /proc/PID/status
# bound over the real ones, so that everything read *inside* says CPU {{ cpu }}.
setsid -f taskset -c {{ cpu }} stress-ng --cpu 1 --quiet </dev/null >/dev/null 2>&1
for i in $(seq 50); do pgrep -x stress-ng-cpu >/dev/null && break; sleep 0.1; done
echo {{ cpu }} > /tmp/fake-cpus
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  mount --bind /tmp/fake-cpus /sys/fs/cgroup/cpuset.cpus.effective
else
  mount --bind /tmp/fake-cpus /sys/fs/cgroup/cpuset/cpuset.cpus
  mount --bind /tmp/fake-cpus /sys/fs/cgroup/cpuset/cpuset.effective_cpus
fi
p=$(pgrep -x stress-ng-cpu)
sed 's/^Cpus_allowed_list:.*/Cpus_allowed_list:\t{{ cpu }}/' /proc/$p/status > /tmp/fake-status
mount --bind /tmp/fake-status /proc/$p/status
grep Cpus_allowed_list /proc/$p/status
