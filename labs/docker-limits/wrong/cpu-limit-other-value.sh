# A quota, but 0.2 CPU more than asked for.
docker run -d --name hog --cpus $(awk 'BEGIN { print {{ target }} + 0.2 }') debian:bookworm sh -c 'while :; do :; done'
