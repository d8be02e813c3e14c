"""The Python SDK: StylizeClient / AsyncStylizeClient (gRPC to Triton), video in and out of real containers, and
client-side metrics. Imports stylize.contract and stylize.engine, never the server, the build or the CLI."""

import os

# gRPC core 1.81+ (this project pins grpcio 1.85.1) can abort a process that starts subprocesses (ffmpeg, the
# encoder and decoder of every video command) while its channels are busy: core's fork handler restarts its poller
# in the child, which then finds its epoll fd closed (grpc/grpc#43055, open; "epoll_wait error: Bad file
# descriptor", SIGABRT). Seen once here, in a resumed `stylize video` run of the suite; not reproduced on demand.
# The SDK never uses a channel in a forked child, so core's fork support is off unless the user set it. Read when
# gRPC initialises: before tritonclient.grpc is imported, which every SDK module does after this package.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
