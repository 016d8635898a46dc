# uts-program: a script that hands the work to the unshare command.
printf '#!/bin/sh\nexec unshare --uts /bin/sh -c "hostname $1; exec sleep 1000"\n' > /root/utsns
chmod 755 /root/utsns
