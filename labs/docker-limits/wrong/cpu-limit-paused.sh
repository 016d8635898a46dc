# The quota is right, but the container is paused (its cgroup frozen).
docker run -d --name hog --cpus {{ target }} debian:bookworm sh -c 'while :; do :; done'
docker pause hog
