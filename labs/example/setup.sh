#!/bin/sh
# Runs as root in each new sandbox of this lab, with NSLAB_PARAM_* in the environment.
echo "This sandbox was prepared for the example lab." > /etc/motd
