#!/usr/bin/env bash
# gRPC fan-out beside WebSocket (issue 16): bench/transports.sh with ws and grpc.
#   bench/grpc.sh [seconds] [repetitions]    prints a markdown table (medians of repetitions)
exec "$(dirname "$0")/transports.sh" "${1:-8}" "${2:-3}" ws grpc
