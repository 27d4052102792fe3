"""The `byok` console command, the demo and the glue between the emulator and Prefect
blocks: the top layer, which may use the flows, the clients and the emulator."""
