# uts-program: the namespace is made and named, but the program exits at once, and the
# namespace with it.
set -e
cat > /root/utsns.c <<'SRC'
#define _GNU_SOURCE
#include <sched.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) { unshare(CLONE_NEWUTS); sethostname(argv[1], strlen(argv[1])); return 0; }
SRC
gcc -o /root/utsns /root/utsns.c
