# Unlimited first, for long enough that it uses more CPU than the quota would have allowed;
# then the quota, written into the running container's cgroup.
set -e
docker run -d --name busy debian:bookworm sh -c 'while :; do :; done'
sleep 3
docker update --cpus {{ update_cpus }} busy
