# Typical mistake: the weights are right, but each loop has a CPU of its own.
docker run -d --name gold --cpu-shares $(( {{ ratio }} * 1024 )) debian:bookworm sh -c 'while :; do :; done'
docker run -d --name silver --cpu-shares 1024 debian:bookworm sh -c 'while :; do :; done'
