#!/bin/sh
# Runs as root in each new sandbox of the namespaces lab (NSLAB_PARAM_* in the environment).
#
# It starts "vaultd", a stand-in for a containerised service: a process in a mount
# namespace of its own (plus one or two more namespaces, different per learner), with a
# tmpfs on /run/vault that holds this learner's secret. The sandbox's own mount namespace
# has a decoy file at the same path, so only a look from inside vaultd's mount namespace
# (nsenter, or /proc/PID/root) finds the secret.
set -eu

secret=$NSLAB_PARAM_SECRET
decoy=$NSLAB_PARAM_DECOY
# VAULT_NS is a code, "vns-" and the extra namespace types joined by "-" (vns-uts-net):
# a hidden value must not be a word that the lab's texts use.
flags="" uts=""
for ns in $(echo "${NSLAB_PARAM_VAULT_NS#vns-}" | tr '-' ' '); do
    case $ns in
        uts|ipc|net|cgroup) ;;
        *) echo "unknown namespace type $ns in NSLAB_PARAM_VAULT_NS" >&2; exit 1 ;;
    esac
    flags="$flags --$ns"
    [ "$ns" != uts ] || uts=1
done
# Nothing started below may carry the params in its environment (/proc/PID/environ).
for var in $(env | sed -n 's/^\(NSLAB_PARAM_[A-Z0-9_]*\)=.*/\1/p'); do
    unset "$var"
done

mkdir -p /run/vault /usr/local/sbin
echo "$decoy" > /run/vault/secret

cat > /usr/local/sbin/vaultd <<'SCRIPT'
#!/bin/sh
# vaultd: keeps a secret in its private mount namespace and otherwise sleeps.
trap 'exit 0' TERM INT
while :; do
    sleep 3600 &
    wait $!
done
SCRIPT
chmod 755 /usr/local/sbin/vaultd

# The secret travels in the environment of the first shell only; vaultd is exec'd
# without it. Its hostname changes only in a UTS namespace of its own.
VAULT_SECRET=$secret VAULT_UTS=$uts setsid -f unshare --mount --propagation private $flags \
    sh -c 'mount -t tmpfs -o size=64k,mode=700 vault /run/vault &&
           printf "%s\n" "$VAULT_SECRET" > /run/vault/secret &&
           chmod 600 /run/vault/secret &&
           { [ -z "$VAULT_UTS" ] || hostname vault; } &&
           unset VAULT_SECRET VAULT_UTS &&
           exec /usr/local/sbin/vaultd' </dev/null >/dev/null 2>&1

# Wait until vaultd runs (the learner's terminal opens right after setup).
i=0
while [ $i -lt 50 ]; do
    pgrep -x vaultd >/dev/null && exit 0
    sleep 0.1
    i=$((i + 1))
done
echo "vaultd did not start" >&2
exit 1
