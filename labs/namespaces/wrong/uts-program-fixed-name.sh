# uts-program: a hostname written into the program instead of taken from its argument.
set -e
cat > /root/utsns.c <<'SRC'
#define _GNU_SOURCE
#include <sched.h>
#include <unistd.h>
int main(void) { unshare(CLONE_NEWUTS); sethostname("fixed", 5); pause(); }
SRC
gcc -o /root/utsns /root/utsns.c
