# Reference solution of net-veth: a network namespace "red" joined to the sandbox by a veth pair.
set -e
ip netns add red
ip link add v0 type veth peer name v1
ip link set v1 netns red
ip addr add 192.168.{{ net }}.1/24 dev v0
ip link set v0 up
nsenter --net=/run/netns/red ip addr add 192.168.{{ net }}.2/24 dev v1
nsenter --net=/run/netns/red ip link set v1 up
nsenter --net=/run/netns/red ip link set lo up
ping -c 1 -W 2 192.168.{{ net }}.2
setsid -f nsenter --net=/run/netns/red python3 -m http.server --bind 192.168.{{ net }}.2 {{ port }} </dev/null >/dev/null 2>&1
for i in $(seq 100); do
    curl -s -o /dev/null http://192.168.{{ net }}.2:{{ port }}/ && break
    sleep 0.1
done
curl -s -o /dev/null -w '%{http_code}\n' http://192.168.{{ net }}.2:{{ port }}/
