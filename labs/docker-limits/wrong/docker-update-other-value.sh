# Updated while running, but to 0.1 CPU more than asked for.
docker run -d --name busy debian:bookworm sh -c 'while :; do :; done'
sleep 1
docker update --cpus $(awk 'BEGIN { print {{ update_cpus }} + 0.1 }') busy
