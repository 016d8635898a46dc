# The quota is right, but nothing in the container wants CPU.
docker run -d --name hog --cpus {{ target }} debian:bookworm sleep infinity
