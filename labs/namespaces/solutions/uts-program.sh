# Reference solution of uts-program: a C program that calls unshare(CLONE_NEWUTS) itself.
# The check runs /root/utsns itself (under the host's tracer), so building it is enough.
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
