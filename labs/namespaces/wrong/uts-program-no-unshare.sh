# uts-program: sethostname() without a new UTS namespace first renames the whole sandbox.
set -e
cat > /root/utsns.c <<'SRC'
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) { sethostname(argv[1], strlen(argv[1])); pause(); }
SRC
gcc -o /root/utsns /root/utsns.c
