# Typical mistake: the ticker is in a freezer cgroup of its own, which was never frozen.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then G=/sys/fs/cgroup/ice; else G=/sys/fs/cgroup/freezer/ice; fi
mkdir -p $G
for p in $(pgrep -x ticker); do echo $p > $G/cgroup.procs; done
