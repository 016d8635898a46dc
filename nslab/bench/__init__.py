"""The benchmarks: `terminal` (keystroke echo through a running web app's terminals) and
`sandbox` (create, exec and destroy latency and memory, against sandboxd). Both talk to
what they measure as its clients do; neither imports the web app or the engine."""
