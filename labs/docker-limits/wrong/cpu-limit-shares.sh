# Typical mistake: --cpu-shares, a weight, where the task asks for a cap.
docker run -d --name hog --cpu-shares 512 debian:bookworm sh -c 'while :; do :; done'
