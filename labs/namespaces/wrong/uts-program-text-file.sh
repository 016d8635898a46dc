# uts-program: a file that holds the words, not a program (the kernel cannot exec it), and
# a UTS namespace made meanwhile by the unshare command.
printf 'unshare(CLONE_NEWUTS)\n' > /root/utsns
chmod 755 /root/utsns
setsid -f unshare --uts sh -c 'hostname probe; exec sleep 1000' </dev/null >/dev/null 2>&1
sleep 0.5
