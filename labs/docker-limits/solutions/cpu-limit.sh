# A busy loop as the container's command, its cgroup's quota set by --cpus.
docker run -d --name hog --cpus {{ target }} debian:bookworm sh -c 'while :; do :; done'
