# One build, two names.
set -e
cd /root/site
echo {{ v2 }} > index.html
docker build -q -t site:1 . >/dev/null
docker tag site:1 site:2
