# Typical mistake: the hog is pinned with taskset (its own affinity), not by a cpuset cgroup.
setsid -f taskset -c {{ cpu }} stress-ng --cpu 1 --quiet </dev/null >/dev/null 2>&1
sleep 0.5
