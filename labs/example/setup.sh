#!/bin/sh
# Runs as root in each new sandbox of this lab, with NSLAB_PARAM_* in the environment
# (hidden params too: the sandbox is where the learner finds them).
echo "This sandbox was prepared for the example lab." > /etc/motd
mkdir -p /srv/example
printf '%s\n' "$NSLAB_PARAM_NOTE" > /srv/example/note
