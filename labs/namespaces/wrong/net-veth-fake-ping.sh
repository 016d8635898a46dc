# net-veth: two veth pairs instead of one (v0-x0 and v1-x1; every end is up, so v0 and v1
# both have carrier) and a /usr/bin/ping that prints success. A check that pinged through
# the sandbox's own ping passed this; the kernel's link between the two ends does not.
set -e
printf '#!/bin/sh\necho "64 bytes from 192.168.{{ net }}.2: icmp_seq=1 ttl=64 time=0.04 ms"\n' > /usr/bin/ping
chmod 755 /usr/bin/ping
ip netns add red
ip link add v0 type veth peer name x0
ip link add v1 type veth peer name x1
ip link set v1 netns red
ip addr add 192.168.{{ net }}.1/24 dev v0
ip link set v0 up
ip link set x0 up
ip link set x1 up
nsenter --net=/run/netns/red ip addr add 192.168.{{ net }}.2/24 dev v1
nsenter --net=/run/netns/red ip link set v1 up
setsid -f nsenter --net=/run/netns/red python3 -m http.server --bind 192.168.{{ net }}.2 {{ port }} </dev/null >/dev/null 2>&1
sleep 1.5
