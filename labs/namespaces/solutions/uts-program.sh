# Reference solution of uts-program: a C program that calls unshare(CLONE_NEWUTS) itself.
set -e
cat > /root/utsns.c <<'SRC'
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char *argv[])
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s HOSTNAME\n", argv[0]);
        return 2;
    }
    if (unshare(CLONE_NEWUTS) == -1) {
        perror("unshare");
        return 1;
    }
    if (sethostname(argv[1], strlen(argv[1])) == -1) {
        perror("sethostname");
        return 1;
    }
    pause();
    return 0;
}
SRC
gcc -o /root/utsns /root/utsns.c
setsid -f /root/utsns {{ progname }} </dev/null >/dev/null 2>&1
for i in $(seq 100); do
    pid=$(pgrep -x utsns) && [ "$(nsenter --target "$pid" --uts hostname)" = {{ progname }} ] && break
    sleep 0.1
done
