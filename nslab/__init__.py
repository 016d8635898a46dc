"""nslab beside the engine (`sandbox`) and the web app (`webapp`): the `nslab` command
(`cli`), the Flask-free lab machinery (`labkit`) and the benchmarks (`bench`)."""
