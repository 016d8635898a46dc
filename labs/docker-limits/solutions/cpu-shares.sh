# Two busy loops pinned to the same CPU, weighted {{ ratio }}:1.
docker run -d --name gold --cpuset-cpus 0 --cpu-shares $(( {{ ratio }} * 1024 )) debian:bookworm sh -c 'while :; do :; done'
docker run -d --name silver --cpuset-cpus 0 --cpu-shares 1024 debian:bookworm sh -c 'while :; do :; done'
