# Pinned together, but with the default weight each: an even split.
docker run -d --name gold --cpuset-cpus 0 debian:bookworm sh -c 'while :; do :; done'
docker run -d --name silver --cpuset-cpus 0 debian:bookworm sh -c 'while :; do :; done'
