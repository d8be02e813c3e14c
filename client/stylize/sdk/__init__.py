"""The Python SDK: StylizeClient / AsyncStylizeClient (gRPC to Triton), video in and out of real containers, and
client-side metrics. Imports stylize.contract and stylize.engine, never the server, the build or the CLI."""
