# Typical mistake: "thawed" without ever having frozen anything: the ticker never left
# the sandbox's own cgroup.
echo THAWED > /tmp/freezer.state
echo 0 > /tmp/cgroup.freeze
