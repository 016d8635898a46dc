# Typical mistake: the unlimited container removed and made anew with --cpus.
docker run -d --name busy debian:bookworm sh -c 'while :; do :; done'
sleep 1
docker rm -f busy
docker run -d --name busy --cpus {{ update_cpus }} debian:bookworm sh -c 'while :; do :; done'
