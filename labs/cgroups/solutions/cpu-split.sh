# gold and silver side by side, weights 2:1, each hog started inside its cgroup and
# pinned to CPU 0 so that the two compete for the same CPU.
set -e
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  B=/sys/fs/cgroup; mkdir -p $B/gold $B/silver
  echo 200 > $B/gold/cpu.weight; echo 100 > $B/silver/cpu.weight
else
  B=/sys/fs/cgroup/cpu; mkdir -p $B/gold $B/silver
  echo 2048 > $B/gold/cpu.shares; echo 1024 > $B/silver/cpu.shares
fi
for g in gold silver; do
  setsid -f sh -c "echo \$\$ > $B/$g/cgroup.procs && exec taskset -c 0 stress-ng --cpu 1 --quiet" \
    </dev/null >/dev/null 2>&1
done
# Each stress-ng forks its worker once it runs; a busy host may take a while.
for i in $(seq 100); do [ "$(pgrep -cx stress-ng-cpu)" -ge 2 ] && break; sleep 0.1; done
