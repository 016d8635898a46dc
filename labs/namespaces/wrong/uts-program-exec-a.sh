# uts-program: a running process that names the program in its argv[0] (exec -a) while
# it is a sleep in a namespace the unshare command made; the file it names only waits.
printf '# unshare(CLONE_NEWUTS) sethostname\nimport signal\nsignal.pause()\n' > /root/utsns.py
setsid -f unshare --uts bash -c 'hostname probe; exec -a /root/utsns.py sleep 1000' </dev/null >/dev/null 2>&1
sleep 0.5
