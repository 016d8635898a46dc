#!/bin/sh
# Runs as root in each new sandbox of this lab: installs and starts `ticker`, the process
# the freezer step freezes. It wakes 20 times a second (so the host sees its CPU time move
# while it runs) and writes the seconds it has counted to /tmp/ticker.
cat > /usr/local/bin/ticker <<'PY'
#!/usr/bin/python3
"""ticker: counts seconds into /tmp/ticker, waking 20 times a second."""
import time

n = 0
while True:
    if n % 20 == 0:
        with open("/tmp/ticker", "w") as f:
            f.write(f"ticker: {n // 20} s counted, clock {time.strftime('%H:%M:%S')}\n")
    n += 1
    time.sleep(0.05)
PY
chmod 755 /usr/local/bin/ticker
setsid -f /usr/local/bin/ticker </dev/null >/dev/null 2>&1
